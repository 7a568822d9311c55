import torch
import torch.nn.functional as F


def invariance(z: torch.Tensor, anchors: int = 0) -> torch.Tensor:
    """EMP-SSL's invariance: mean over views and images of cos(z_v, z_bar).

    z: (n_views, m, d). z_bar is the plain (not re-normalised) mean of an image's view embeddings, or of its
    first ``anchors`` views only when ``anchors`` > 0 (every view is then pulled to those, e.g. the clean ones).
    Returns a scalar in [-1, 1], computed in float32.
    """
    with torch.autocast(z.device.type, enabled=False):
        z = z.float()
        target = z[:anchors] if anchors else z
        return F.cosine_similarity(z, target.mean(0, keepdim=True), dim=-1).mean()
