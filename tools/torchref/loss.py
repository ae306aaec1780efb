"""The official YOLOv9 TAL loss (utils/loss_tal.py, loss_tal_dual.py, loss_tal_triple.py) in plain PyTorch.

Written from the step-by-step description in ../shared/golden/README.md and the official code:
TaskAlignedAssigner (topk 10, alpha 0.5, beta 6), BCE on the class logits, CIoU and DFL on the foreground
anchors, gains box 7.5 / cls 0.5 / dfl 1.5. Heads are weighted 1 (single), 0.25 + 1 (dual) or
0.25 + 0.25 + 1 (triple), each head with its own assignment and its own target-score sum.

    loss_fn = ComputeLoss(model)
    total, items = loss_fn(model(x), targets)   # targets [M, 6]: image, class, cx, cy, w, h (normalised)
    total.backward()                            # total = (box + cls + dfl) * batch size
"""
import math

import torch
import torch.nn.functional as F

from .model import REG_MAX, dist2bbox, make_anchors

BOX_GAIN, CLS_GAIN, DFL_GAIN = 7.5, 0.5, 1.5
HEAD_WEIGHTS = {1: (1.0,), 2: (0.25, 1.0), 3: (0.25, 0.25, 1.0)}
HEAD_NAMES = {1: ("main",), 2: ("aux", "main"), 3: ("aux1", "aux2", "main")}


def bbox_ciou(box1, box2, eps=1e-7):
    """CIoU of xyxy boxes (broadcast over leading dims, last dim 4) -> [..., 1], as utils/metrics.bbox_iou
    with CIoU=True: eps on the heights only, alpha is a constant for backward."""
    b1_x1, b1_y1, b1_x2, b1_y2 = box1.chunk(4, -1)
    b2_x1, b2_y1, b2_x2, b2_y2 = box2.chunk(4, -1)
    w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1 + eps
    w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1 + eps
    inter = (torch.min(b1_x2, b2_x2) - torch.max(b1_x1, b2_x1)).clamp(0) * \
            (torch.min(b1_y2, b2_y2) - torch.max(b1_y1, b2_y1)).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.max(b1_x2, b2_x2) - torch.min(b1_x1, b2_x1)  # enclosing box
    ch = torch.max(b1_y2, b2_y2) - torch.min(b1_y1, b2_y1)
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4
    v = (4 / math.pi ** 2) * torch.pow(torch.atan(w2 / h2) - torch.atan(w1 / h1), 2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


class TaskAlignedAssigner:
    """Assigns gt boxes to anchors by the alignment metric score^alpha * CIoU^beta (utils/tal/assigner.py).

    Inputs (detached, pixels): scores [b,A,nc] (sigmoid), pred boxes [b,A,4] xyxy, anchor centres [A,2],
    gt labels [b,M,1], gt boxes [b,M,4] xyxy, mask_gt [b,M,1] (real rows vs padding).
    Returns target_labels [b,A], target_bboxes [b,A,4], target_scores [b,A,nc], fg_mask [b,A] (bool)."""

    def __init__(self, topk=10, num_classes=80, alpha=0.5, beta=6.0, eps=1e-9):
        self.topk, self.nc, self.alpha, self.beta, self.eps = topk, num_classes, alpha, beta, eps

    @torch.no_grad()
    def __call__(self, pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt):
        bs, n_anchors, _ = pd_scores.shape
        n_max = gt_bboxes.shape[1]
        if n_max == 0:
            return (torch.full((bs, n_anchors), self.nc, dtype=torch.long), torch.zeros_like(pd_bboxes),
                    torch.zeros_like(pd_scores), torch.zeros((bs, n_anchors), dtype=torch.bool))

        # a. alignment metric [b, M, A]: the score of the gt's class times CIoU^beta
        labels = gt_labels.long().squeeze(-1)  # [b, M]
        batch_idx = torch.arange(bs).view(-1, 1).expand(bs, n_max)
        bbox_scores = pd_scores[batch_idx, :, labels]  # [b, M, A]
        overlaps = bbox_ciou(gt_bboxes.unsqueeze(2), pd_bboxes.unsqueeze(1)).squeeze(3).clamp(0)
        align_metric = bbox_scores.pow(self.alpha) * overlaps.pow(self.beta)

        # b. candidates: the anchor centre strictly inside the gt box
        lt, rb = gt_bboxes.view(-1, 1, 4).chunk(2, 2)
        deltas = torch.cat((anc_points[None] - lt, rb - anc_points[None]), dim=2).view(bs, n_max, n_anchors, 4)
        mask_in_gts = deltas.amin(3).gt_(self.eps)

        # c. the topk anchors per gt; padding rows point at index 0, which the duplicate rule then drops
        _, topk_idxs = torch.topk(align_metric * mask_in_gts, self.topk, dim=-1, largest=True)
        topk_idxs = torch.where(mask_gt.bool().expand(-1, -1, self.topk), topk_idxs, 0)
        is_in_topk = F.one_hot(topk_idxs, n_anchors).sum(-2)
        is_in_topk = torch.where(is_in_topk > 1, 0, is_in_topk).to(align_metric.dtype)
        mask_pos = is_in_topk * mask_in_gts * mask_gt  # [b, M, A]

        # d. an anchor claimed by several gts goes to the gt of largest CIoU (over all M rows)
        fg_count = mask_pos.sum(-2)
        if fg_count.max() > 1:
            multi = (fg_count.unsqueeze(1) > 1).expand(-1, n_max, -1)
            best = F.one_hot(overlaps.argmax(1), n_max).permute(0, 2, 1).to(overlaps.dtype)
            mask_pos = torch.where(multi, best, mask_pos)
            fg_count = mask_pos.sum(-2)
        target_gt_idx = mask_pos.argmax(-2)  # [b, A]; 0 (gt row 0) for background anchors
        fg_mask = fg_count > 0

        # e. targets of the chosen gt (background anchors too: row 0's label and box)
        flat_idx = target_gt_idx + torch.arange(bs).view(-1, 1) * n_max
        target_labels = gt_labels.long().flatten()[flat_idx]
        target_bboxes = gt_bboxes.view(-1, 4)[flat_idx]
        target_scores = F.one_hot(target_labels, self.nc)
        target_scores = torch.where(fg_mask[:, :, None], target_scores, 0)

        # f. scale the one-hot scores by the anchor's metric, normalised per gt to that gt's best CIoU
        align_metric = align_metric * mask_pos
        pos_align = align_metric.amax(dim=-1, keepdim=True)
        pos_overlaps = (overlaps * mask_pos).amax(dim=-1, keepdim=True)
        norm = (align_metric * pos_overlaps / (pos_align + self.eps)).amax(-2).unsqueeze(-1)
        return target_labels, target_bboxes, target_scores * norm, fg_mask


class ComputeLoss:
    """The official ComputeLoss for a DDetect / DualDDetect / TripleDDetect model.

    After a call, `last_assign[head_name]` holds that head's assigner outputs (target_bboxes in pixels,
    as returned by the assigner) for checking against the golden files."""

    def __init__(self, model, topk=10, alpha=0.5, beta=6.0):
        head = model.model[-1]
        self.nc, self.no, self.stride = head.nc, head.no, head.stride
        self.n_heads = head.n_heads
        self.assigner = TaskAlignedAssigner(topk, self.nc, alpha, beta)
        self.proj = torch.arange(REG_MAX, dtype=torch.float)
        self.last_assign = {}

    def __call__(self, preds, targets):
        maps = preds[1] if isinstance(preds, tuple) else preds  # eval output is (pred, maps)
        if self.n_heads == 1:
            maps = [maps]
        feats0 = maps[0]
        batch = feats0[0].shape[0]
        anchor_points, stride_t = make_anchors(feats0, self.stride, 0.5)
        imgsz = torch.tensor(feats0[0].shape[2:], dtype=feats0[0].dtype) * self.stride[0]  # (h, w) pixels
        gt = self.preprocess(targets, batch, imgsz[[1, 0, 1, 0]])
        gt_labels, gt_bboxes = gt.split((1, 4), 2)
        mask_gt = gt_bboxes.sum(2, keepdim=True).gt_(0)

        loss = torch.zeros(3)  # box, cls, dfl
        weights, names = HEAD_WEIGHTS[self.n_heads], HEAD_NAMES[self.n_heads]
        for feats, w, name in zip(maps, weights, names):
            box, cls, dfl = self.head_loss(feats, name, anchor_points, stride_t, gt_labels, gt_bboxes, mask_gt)
            loss = loss + w * torch.stack((box, cls, dfl))
        loss = loss * torch.tensor([BOX_GAIN, CLS_GAIN, DFL_GAIN])
        return loss.sum() * batch, loss.detach()

    @staticmethod
    def preprocess(targets, batch, scale):
        """[M,6] rows (image, class, cx, cy, w, h) -> [batch, max rows per image, 5] (class, x1, y1, x2, y2)
        in pixels; rows keep their order within an image; missing rows are zeros."""
        if targets.shape[0] == 0:
            return torch.zeros(batch, 0, 5)
        image = targets[:, 0].long()
        out = torch.zeros(batch, int(torch.bincount(image).max()), 5)
        for j in range(batch):
            rows = targets[image == j, 1:]
            out[j, :rows.shape[0]] = rows
        xywh = out[..., 1:5] * scale
        out[..., 1:3] = xywh[..., :2] - xywh[..., 2:] / 2
        out[..., 3:5] = xywh[..., :2] + xywh[..., 2:] / 2
        return out

    def bbox_decode(self, anchor_points, pred_dist):
        """xyxy in grid units from the DFL expectation of each side's 16 bins."""
        b, a, c = pred_dist.shape
        dist = pred_dist.view(b, a, 4, c // 4).softmax(3).matmul(self.proj.type(pred_dist.dtype))
        return dist2bbox(dist, anchor_points, xywh=False)

    def head_loss(self, feats, name, anchor_points, stride_t, gt_labels, gt_bboxes, mask_gt):
        n = feats[0].shape[0]
        pred_distri, pred_scores = torch.cat([f.view(n, self.no, -1) for f in feats], 2).split(
            (4 * REG_MAX, self.nc), 1)
        pred_scores = pred_scores.permute(0, 2, 1).contiguous()  # [b, A, nc] logits
        pred_distri = pred_distri.permute(0, 2, 1).contiguous()  # [b, A, 64]
        pred_bboxes = self.bbox_decode(anchor_points, pred_distri)

        target_labels, target_bboxes, target_scores, fg_mask = self.assigner(
            pred_scores.detach().sigmoid(), pred_bboxes.detach() * stride_t, anchor_points * stride_t,
            gt_labels, gt_bboxes, mask_gt)
        self.last_assign[name] = (target_labels, target_bboxes, target_scores, fg_mask)
        target_bboxes = target_bboxes / stride_t
        target_scores_sum = target_scores.sum().clamp(min=1)  # max(sum, 1)

        cls = F.binary_cross_entropy_with_logits(pred_scores, target_scores.to(pred_scores.dtype),
                                                 reduction="none").sum() / target_scores_sum
        if not fg_mask.any():
            zero = torch.zeros(())
            return zero, cls, zero

        weight = target_scores.sum(-1)[fg_mask].unsqueeze(-1)  # [P, 1]
        iou = bbox_ciou(pred_bboxes[fg_mask], target_bboxes[fg_mask])
        box = ((1.0 - iou) * weight).sum() / target_scores_sum

        # DFL: cross-entropy towards the two bins around each side's distance, linearly weighted
        x1y1, x2y2 = target_bboxes.chunk(2, -1)
        target_ltrb = torch.cat((anchor_points - x1y1, x2y2 - anchor_points), -1).clamp(0, REG_MAX - 1 - 0.01)
        t = target_ltrb[fg_mask]  # [P, 4]
        logits = pred_distri[fg_mask].view(-1, REG_MAX)  # [P*4, 16]
        tl = t.long()
        wl = (tl + 1).to(t.dtype) - t
        ce_l = F.cross_entropy(logits, tl.view(-1), reduction="none").view(tl.shape)
        ce_r = F.cross_entropy(logits, (tl + 1).view(-1), reduction="none").view(tl.shape)
        dfl = ((ce_l * wl + ce_r * (1 - wl)).mean(-1, keepdim=True) * weight).sum() / target_scores_sum
        return box, cls, dfl
