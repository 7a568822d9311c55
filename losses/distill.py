import torch
import torch.nn.functional as F


def distill_loss(student: torch.Tensor, student_adv: torch.Tensor, teacher: torch.Tensor, coef: float = 2.0):
    """DeACL's second-stage objective (Zhang et al., ECCV 2022).

    student: (N, d) the student's features of N clean views; student_adv: (N, d) of the same views perturbed;
    teacher: (N, d) a fixed teacher's features of the clean views. Returns (loss, cos_teacher, cos_adv) with
    cos_teacher = mean_i cos(student_i, teacher_i), cos_adv = mean_i cos(student_adv_i, student_i) (both
    detached) and loss = -cos_teacher - coef * cos_adv: match the teacher on clean views, and keep the perturbed
    views where the clean ones are.
    """
    cos_teacher = F.cosine_similarity(student, teacher, dim=-1).mean()
    cos_adv = F.cosine_similarity(student_adv, student, dim=-1).mean()
    return -cos_teacher - coef * cos_adv, cos_teacher.detach(), cos_adv.detach()
