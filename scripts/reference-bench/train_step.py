"""The official EfficientViT-SAM training step in PyTorch, timed for `evsam bench-train`.

PyPI `efficientsam` 1.0.0 packages the model but not the trainer (`efficientvit/samcore/trainer`),
so the step is rebuilt here from mit-han-lab/efficientvit: `SAMTrainer.before_step` and
`run_step` (sam_trainer.py), the loss helpers of samcore/trainer/utils.py (SAM-HQ's PointRend
point sampling, BCE and dice), `Trainer.after_step` (clip_grad_value_, optimizer step) and
`RunConfig.build_optimizer` (AdamW, no weight decay on names containing `norm` or `bias`).
The CUDA and AMP parts are left out (CPU, float32, as the official code runs with amp="fp32").

Three parts, each in its own process so that its peak memory is its own:
  full     one training step: the image encoder in train mode (BatchNorm on batch statistics),
           the prompt encoder and mask decoder on box prompts (multimask), the official loss,
           backward, clip_grad_value_(2.0), AdamW;
  encoder  a distillation step: the image encoder in train mode, MSE to a target embedding,
           backward, clip_grad_value_(2.0), AdamW;
  decoder  the full step with the encoder frozen: embeddings computed once under no_grad,
           the rest as in `full` (what `evsam bench-train --part decoder` times).
"""

import ctypes
import os
import statistics
import time

import torch
import torch.nn.functional as F


# --- samcore/trainer/utils.py (the loss), as the official trainer calls it ---------------------


def point_sample(input, point_coords, **kwargs):
    add_dim = False
    if point_coords.dim() == 3:
        add_dim = True
        point_coords = point_coords.unsqueeze(2)
    output = F.grid_sample(input, 2.0 * point_coords - 1.0, **kwargs)
    if add_dim:
        output = output.squeeze(3)
    return output


def get_uncertain_point_coords_with_randomness(
    coarse_logits, uncertainty_func, num_points, oversample_ratio, importance_sample_ratio
):
    num_boxes = coarse_logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    point_coords = torch.rand(num_boxes, num_sampled, 2, device=coarse_logits.device)
    point_logits = point_sample(coarse_logits, point_coords, align_corners=False)
    point_uncertainties = uncertainty_func(point_logits)
    num_uncertain_points = int(importance_sample_ratio * num_points)
    num_random_points = num_points - num_uncertain_points
    idx = torch.topk(point_uncertainties[:, 0, :], k=num_uncertain_points, dim=1)[1]
    shift = num_sampled * torch.arange(num_boxes, dtype=torch.long, device=coarse_logits.device)
    idx += shift[:, None]
    point_coords = point_coords.view(-1, 2)[idx.view(-1), :].view(num_boxes, num_uncertain_points, 2)
    if num_random_points > 0:
        extra = torch.rand(num_boxes, num_random_points, 2, device=coarse_logits.device)
        point_coords = torch.cat([point_coords, extra], dim=1)
    return point_coords


def calculate_uncertainty(logits):
    return -(torch.abs(logits.clone()))


def dice_loss(inputs, targets, num_masks: float, mode: str):
    inputs = inputs.sigmoid().flatten(1)
    numerator = 2 * (inputs * targets).sum(-1)
    denominator = inputs.sum(-1) + targets.sum(-1)
    loss = 1 - (numerator + 1) / (denominator + 1)
    return loss if mode == "none" else loss.sum() / num_masks


def sigmoid_ce_loss(inputs, targets, num_masks: float, mode: str):
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.mean(1) if mode == "none" else loss.mean(1).sum() / num_masks


def loss_masks(src_masks, target_masks, num_masks, oversample_ratio=3.0, mode="mean"):
    with torch.no_grad():
        point_coords = get_uncertain_point_coords_with_randomness(
            src_masks, calculate_uncertainty, 112 * 112, oversample_ratio, 0.75
        )
        point_labels = point_sample(target_masks, point_coords, align_corners=False).squeeze(1)
    point_logits = point_sample(src_masks, point_coords, align_corners=False).squeeze(1)
    return (
        sigmoid_ce_loss(point_logits, point_labels, num_masks, mode),
        dice_loss(point_logits, point_labels, num_masks, mode),
    )


# --- SAMTrainer.run_step's loss over the outputs ----------------------------------------------


def official_loss(output, masks, height, width):
    """`output` [B, M, K, 256, 256], `masks` [B, M, H, W]: min over outputs of 20·BCE + dice."""
    masks = masks.reshape(-1, height, width).unsqueeze(1)
    loss_list = []
    for i in range(output.shape[2]):
        output_i = (
            F.interpolate(output[:, :, i], size=(height, width), mode="bilinear")
            .reshape(-1, height, width)
            .unsqueeze(1)
        )
        loss_mask_i, loss_dice_i = loss_masks(output_i, masks, len(output_i), mode="none")
        loss_list.append(loss_mask_i * 20 + loss_dice_i)
    loss = torch.stack(loss_list, -1)
    min_indices = torch.argmin(loss, dim=1)
    mask = torch.zeros_like(loss, device=loss.device)
    mask.scatter_(1, min_indices.unsqueeze(1), 1)
    return (loss * mask).mean() * loss.shape[-1]


def build_optimizer(model, lr=1e-4, weight_decay=0.1, no_wd_keys=("norm", "bias")):
    """`RunConfig.build_optimizer` with the official SAM run config's AdamW."""
    groups = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            wd = 0.0 if any(key in name for key in no_wd_keys) else weight_decay
            groups.setdefault(wd, []).append(param)
    params = [{"params": p, "weight_decay": wd, "lr": lr} for wd, p in groups.items()]
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)


def after_step(model, optimizer):
    """`Trainer.after_step` without AMP: value clipping at 2.0, then the update."""
    torch.nn.utils.clip_grad_value_(model.parameters(), 2.0)
    optimizer.step()


# --- inputs -----------------------------------------------------------------------------------


def synthetic_batch(images, masks_per_image, side, seed):
    """A normalised image batch and, per image, boxes (XYWH in the encoder's frame, as the
    data provider gives them) of 10–40 % of the side with their filled rectangles as masks."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(images, 3, side, side, generator=g)
    masks = torch.zeros(images, masks_per_image, side, side)
    bboxs = torch.zeros(images, masks_per_image, 4)
    for b in range(images):
        for m in range(masks_per_image):
            w, h = (int(side * (0.1 + 0.3 * torch.rand(1, generator=g).item())) for _ in range(2))
            x0 = int(torch.randint(0, side - w + 1, (1,), generator=g).item())
            y0 = int(torch.randint(0, side - h + 1, (1,), generator=g).item())
            masks[b, m, y0 : y0 + h, x0 : x0 + w] = 1
            bboxs[b, m] = torch.tensor([x0, y0, w, h], dtype=torch.float)
    return image, masks, bboxs


def before_step(image, masks, bboxs):
    """`SAMTrainer.before_step`: boxes to the 1024 prompt frame, XYWH → XYXY."""
    bboxs = bboxs * 2 if image.shape[2] == 512 else bboxs.clone()
    bboxs[..., 2] = bboxs[..., 0] + bboxs[..., 2]
    bboxs[..., 3] = bboxs[..., 1] + bboxs[..., 3]
    return image, masks, bboxs


def decode(model, embeddings, bboxs, multimask_output):
    """`EfficientViTSam.forward` after its image encoder call (the per-image loop)."""
    outputs = []
    for b in range(len(embeddings)):
        sparse, dense = model.prompt_encoder(points=None, boxes=bboxs[b], masks=None)
        low_res_masks, _ = model.mask_decoder(
            image_embeddings=embeddings[b].unsqueeze(0),
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )
        outputs.append(low_res_masks)
    return torch.stack(outputs, dim=0)


# --- timing -----------------------------------------------------------------------------------


def status_mb(field):
    """A memory figure of /proc/self/status (VmHWM: peak, VmRSS: now), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def peak_rss_mb():
    return status_mb("VmHWM")


def reset_peak_rss():
    """Gives freed heap pages back (glibc's malloc_trim, so that what stays resident is what
    is live), then resets the kernel's high-water mark to the current RSS (Linux clear_refs
    code 5). `evsam bench-train` does the same."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def prepare_part(model, part, images, masks_per_image, seed):
    """The inputs, the optimiser and a function running one step of `part` (returns its loss)."""
    side = model.image_size[1]
    image, masks, bboxs = before_step(*synthetic_batch(images, masks_per_image, side, seed))
    model.train()
    optimizer = build_optimizer(model)
    torch.manual_seed(seed)
    if part == "encoder":
        with torch.no_grad():
            target = torch.randn_like(model.image_encoder(image))
    if part == "decoder":
        with torch.no_grad():
            embeddings = model.image_encoder(image)

    def step():
        optimizer.zero_grad()
        if part == "encoder":
            loss = F.mse_loss(model.image_encoder(image), target)
        else:
            if part == "full":
                batched_input = [{"image": image[b], "boxes": bboxs[b]} for b in range(images)]
                output, _ = model(batched_input, multimask_output=True)
            else:
                output = decode(model, embeddings, bboxs, True)
            loss = official_loss(output, masks, side, side)
        loss.backward()
        after_step(model, optimizer)
        return float(loss.detach())

    return step


def run_part(model, part, images, masks_per_image, runs, warmup, seed):
    """Times `runs` steps of `part` after `warmup` untimed ones; returns the result entry."""
    step = prepare_part(model, part, images, masks_per_image, seed)
    setup_peak = peak_rss_mb()
    reset = reset_peak_rss()
    resident = status_mb("VmRSS")
    losses, times = [], []
    for i in range(warmup + runs):
        start = time.perf_counter()
        loss = step()
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed)
            losses.append(loss)
    return {
        "step_s": {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": times},
        "losses": losses,
        "step_peak_rss_mb": peak_rss_mb() if reset else None,
        "setup_peak_rss_mb": setup_peak,
        "rss_at_reset_mb": resident,
        "peak_rss_reset": reset,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pid": os.getpid(),
    }
