"""The fine-tuned network: a timm backbone, an embedding layer (the vectors the index holds), a category head and,
when the catalogue has tags, a multi-label tag head; plus the losses that train it and the freeze policies.

The heads read the embedding, so what the classifier learns shapes the search space directly: a category head
trained with cross-entropy pulls items of one category together, and the optional triplet loss does so explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.config import TrainConfig


@dataclass
class ModelOutput:
    embedding: torch.Tensor  # (B, embedding_dim), before normalisation
    category_logits: torch.Tensor  # (B, n_categories)
    tag_logits: torch.Tensor | None  # (B, n_tags) or None without tags


class EmbeddingNet(nn.Module):
    """backbone (pooled features) → Linear + BatchNorm (embedding) → dropout → category / tag heads."""

    def __init__(self, backbone: nn.Module, feature_dim: int, embedding_dim: int, n_categories: int, n_tags: int = 0,
                 dropout: float = 0.2):
        super().__init__()
        self.backbone = backbone
        self.embedding = nn.Sequential(nn.Linear(feature_dim, embedding_dim), nn.BatchNorm1d(embedding_dim))
        self.dropout = nn.Dropout(dropout)
        self.category_head = nn.Linear(embedding_dim, n_categories)
        self.tag_head = nn.Linear(embedding_dim, n_tags) if n_tags else None

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.heads(self.backbone(x))

    def heads(self, features: torch.Tensor) -> ModelOutput:
        """Everything after the backbone; the "heads" freeze policy trains only this, on cached features."""
        embedding = self.embedding(features)
        hidden = self.dropout(embedding)
        tags = self.tag_head(hidden) if self.tag_head is not None else None
        return ModelOutput(embedding, self.category_head(hidden), tags)


class EmbeddingOnly(nn.Module):
    """The inference graph the Embedder traces: image → embedding (the heads run on the embedding in numpy)."""

    def __init__(self, net: EmbeddingNet):
        super().__init__()
        self.backbone, self.embedding = net.backbone, net.embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.backbone(x))


def build_net(backbone: nn.Module, config: TrainConfig, n_categories: int, n_tags: int) -> EmbeddingNet:
    feature_dim = int(getattr(backbone, "num_features", 0)) or _probe_feature_dim(backbone, config.image_size)
    # The new layers are initialised from a fixed seed: the same recipe must start from the same weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return EmbeddingNet(backbone, feature_dim, config.embedding_dim, n_categories, n_tags)


def start_tags_at_their_frequency(net: EmbeddingNet, tags: torch.Tensor) -> None:
    """Set the tag head's biases to the log-odds of each tag's share of the training items.

    A zero bias starts every tag at probability 0.5, and with a few hundred items (a shop) the head spends its whole
    budget unlearning that: measured on the shop, half of its probabilities lay between 0.27 and 0.50 after 15
    epochs. Starting at the prior is the usual cure (RetinaNet's prior initialisation)."""
    if net.tag_head is None or not len(tags):
        return
    share = tags.float().mean(0).clamp(1e-3, 1 - 1e-3)
    with torch.no_grad():
        net.tag_head.bias.copy_(torch.log(share / (1 - share)).to(net.tag_head.bias))


def _probe_feature_dim(backbone: nn.Module, image_size: int) -> int:
    with torch.no_grad():
        return int(backbone.eval()(torch.zeros(1, 3, image_size, image_size)).shape[1])


def backbone_stages(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's stages in order (timm's EfficientNets, MobileNets and ViTs name them ``blocks``; ResNets'
    and ConvNeXts' equivalents are ``stages`` or ``layer1..4``)."""
    for name in ("blocks", "stages"):
        if isinstance(getattr(backbone, name, None), nn.Sequential):
            return list(getattr(backbone, name))
    layers = [getattr(backbone, f"layer{i}") for i in range(1, 5) if hasattr(backbone, f"layer{i}")]
    if layers:
        return layers
    raise ValueError(f"{type(backbone).__name__} has no stages this policy can find; use freeze 'full' or 'heads'.")


def apply_freeze(net: EmbeddingNet, config: TrainConfig) -> list[nn.Module]:
    """Set ``requires_grad`` by the recipe's policy; returns the backbone modules that stay frozen (kept in eval
    mode while training, so their batch-norm statistics are the pretrained ones)."""
    backbone = net.backbone
    if config.freeze == "full":
        backbone.requires_grad_(True)
        return []
    backbone.requires_grad_(False)
    if config.freeze == "heads":
        return [backbone]
    stages = backbone_stages(backbone)
    trainable = stages[-config.trainable_blocks :]
    # Everything after the last stage (EfficientNet's conv_head + bn2) learns with it.
    tail = [module for name, module in backbone.named_children() if name in ("conv_head", "bn2", "norm", "head_norm")]
    for module in (*trainable, *tail):
        module.requires_grad_(True)
    trainable_ids = {id(m) for m in (*trainable, *tail)}
    return [m for m in _leaf_parents(backbone) if id(m) not in trainable_ids]


def _leaf_parents(backbone: nn.Module) -> list[nn.Module]:
    """Top-level children, with the stage container expanded into its stages."""
    out = []
    for name, module in backbone.named_children():
        if name in ("blocks", "stages") and isinstance(module, nn.Sequential):
            out.extend(module)
        else:
            out.append(module)
    return out


def batch_hard_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Triplet margin loss with in-batch hard mining (Hermans et al. 2017): for each anchor, its farthest positive
    and its closest negative in the batch. Anchors without a positive or a negative in the batch are skipped."""
    unit = F.normalize(embeddings.float(), dim=1)
    distance = torch.cdist(unit, unit)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positives, negatives = same & ~eye, ~same
    valid = positives.any(1) & negatives.any(1)
    if not valid.any():
        return distance.sum() * 0.0  # keeps the graph (and the step) uniform when a batch has no triplet
    hardest_positive = distance.masked_fill(~positives, float("-inf")).amax(1)
    hardest_negative = distance.masked_fill(~negatives, float("inf")).amin(1)
    return F.relu(hardest_positive - hardest_negative + margin)[valid].mean()


def training_loss(output: ModelOutput, labels: torch.Tensor, tags: torch.Tensor | None,
                  config: TrainConfig) -> torch.Tensor:
    loss = F.cross_entropy(output.category_logits.float(), labels, label_smoothing=config.label_smoothing)
    if output.tag_logits is not None and tags is not None:
        loss = loss + config.tag_weight * F.binary_cross_entropy_with_logits(output.tag_logits.float(), tags)
    if config.triplet_weight > 0:
        loss = loss + config.triplet_weight * batch_hard_triplet_loss(output.embedding, labels, config.triplet_margin)
    return loss
