import torch


def total_coding_rate(z: torch.Tensor, eps: float = 0.2) -> torch.Tensor:
    """Total coding rate of each view's batch, 1/2 logdet(I_d + d/(m eps) Z^T Z).

    z: (n_views, m, d). Returns (n_views,). Evaluated in the m x m Gram form
    1/2 logdet(I_m + d/(m eps) Z Z^T) (Sylvester's identity), which for m << d is far cheaper, with a
    batched Cholesky in float32 whatever the autocast state: the matrix is I + PSD, so it is always
    positive definite and the result is finite even when the embeddings are rank-deficient.
    """
    with torch.autocast(z.device.type, enabled=False):
        z = z.float()
        _, m, d = z.shape
        gram = z @ z.transpose(1, 2)
        eye = torch.eye(m, device=z.device, dtype=z.dtype)
        # cholesky_ex: no host sync to check for failure; non-finite input gives a non-finite value that the
        # training loop reports, instead of an exception from deep inside the factorisation.
        chol, _ = torch.linalg.cholesky_ex(eye + (d / (m * eps)) * gram)
        return torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
