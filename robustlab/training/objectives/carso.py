"""CARSO training (spec §1.6): adversarially balanced batches against the frozen classifier alone, clean images as
reconstruction targets, loss = summed pixel BCE + beta * KL with the lag-then-ramp beta schedule.

Registered as objective ``carso``. Its ``attack`` section is the strong PGD (the released code: 40 steps, step 0.01,
random start); by default the attack set is, in the released order, PGD weak, PGD strong, FGSM weak, FGSM strong,
weak eps = ``eps_weak`` (default: half the strong eps). ``attacks`` replaces the set; ``self_attacks`` (not in the
paper) adds attacks crafted end to end on the CARSO model itself. Both losses are sums over the
batch in the code (``reduction="sum"``); the default divides that sum by the batch size (see ``CARSOParams``).
The BCE is taken from the decoder's pre-sigmoid output, so a saturated pixel keeps its gradient.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from robustlab.attacks.base import Attack
from robustlab.attacks.config import AttackConfig, build_attack
from robustlab.core.errors import ConfigError
from robustlab.training.objectives.base import Metrics, Objective, ObjectiveConfig, register_objective


class CARSOParams(BaseModel):
    """Options of the ``carso`` objective (defaults: the v1 MNIST/Fashion-MNIST setting, spec §1.9)."""

    model_config = ConfigDict(extra="forbid")
    adv_fraction: float = Field(default=0.4, ge=0, le=1)
    eps_weak: float | None = Field(default=None, gt=0)
    attacks: list[AttackConfig] | None = None
    beta_max: float = Field(default=1.0, ge=0)
    beta_lag_epochs: float = Field(default=0.0, ge=0)
    beta_ramp_epochs: float = Field(default=0.0, ge=0)
    beta_per_epoch: bool = True  # the code steps beta once per epoch; False: continuous in fractional epochs
    # "sum" (the code): BCE and KL summed over the batch. "mean" (default): the same sum divided by the batch size.
    # Adam-type steps are scale-free, so the two differ only in RAdam's first ~5 un-rectified steps, which are
    # plain SGD steps of size lr * gradient: on the summed loss they sent an MNIST decoder to NaN at lr 2.5e-5
    # (batch 256, measured), while the mean trains at lr 1e-3 from the first step.
    reduction: Literal["sum", "mean"] = "mean"
    # Beyond the paper: attacks crafted end to end on the CARSO model itself (through the smooth ``self_aggregation``
    # view, as the evaluation's surrogate attacks are), each taking one chunk of the adversarial share beside the
    # attacks on the classifier: with K classifier attacks and M of these, M / (K + M) of the adversarial examples.
    self_attacks: list[AttackConfig] = Field(default_factory=list)
    self_aggregation: str = "logit"


def beta_schedule(
    epochs_done: float, *, lag: float, ramp: float, beta_max: float = 1.0, per_epoch: bool = True
) -> float:
    """KL weight: 0 for the first ``lag`` epochs, then linear 0 -> ``beta_max`` over ``ramp`` epochs, then flat.

    With ``per_epoch`` it is evaluated at the epoch index (floor), as the released per-epoch scheduler does:
    E=200 (lag 25, ramp 9) gives 0 up to epoch 25, 1/9 at 26, ..., 1 from epoch 34 on.
    """
    t = math.floor(epochs_done) if per_epoch else epochs_done
    if t < lag:
        return 0.0
    if ramp <= 0:
        return float(beta_max)
    return float(beta_max) * min(1.0, (t - lag) / ramp)


def split_sizes(batch: int, fraction: float, n_attacks: int) -> tuple[int, int]:
    """(clean count, per-attack count): atom = floor(B * fraction / K); the first B - K * atom stay clean."""
    atom = math.floor(batch * fraction / n_attacks) if n_attacks else 0
    return batch - n_attacks * atom, atom


def mix_batch(x: Tensor, y: Tensor, attacks: list, fraction: float) -> tuple[Tensor, Tensor]:
    """AdverApply: the tail ``K * atom`` samples are split in K chunks, chunk k perturbed by attack k.

    Returns (inputs, source) where source[i] = 0 for clean and k + 1 for attack k; the clean originals ``x`` are the
    reconstruction targets.
    """
    n_clean, atom = split_sizes(len(x), fraction, len(attacks))
    pieces, source = [x[:n_clean]], [torch.zeros(n_clean, dtype=torch.long, device=x.device)]
    for k, attack in enumerate(attacks):
        lo = n_clean + k * atom
        if atom:
            pieces.append(attack(x[lo : lo + atom], y[lo : lo + atom]))
            source.append(torch.full((atom,), k + 1, dtype=torch.long, device=x.device))
    return torch.cat(pieces), torch.cat(source)


def vae_loss(
    x_rec: Tensor, target: Tensor, mu: Tensor, logvar: Tensor, beta: float, *, logits: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """(BCE_sum + beta * KL_sum, BCE_sum, KL_sum) with KL = 0.5 * sum(mu^2 + exp(logvar) - logvar - 1).

    ``logits=True``: ``x_rec`` is pre-sigmoid. The value is the same BCE, but its gradient (sigmoid - target) never
    vanishes: on sigmoid outputs a pixel pushed to exactly 0 or 1 (float32) has zero gradient for good. With the
    summed loss, RAdam's first un-rectified (SGD-like) steps did exactly that to every pixel of an MNIST decoder
    (BCE stuck at ~10,000 per image, measured), so training uses logits.
    """
    if logits:
        bce = F.binary_cross_entropy_with_logits(x_rec.float(), target.float(), reduction="sum")
    else:
        bce = F.binary_cross_entropy(x_rec.float(), target.float(), reduction="sum")
    kl = 0.5 * torch.sum(mu.float() ** 2 + torch.exp(logvar.float()) - logvar.float() - 1)
    return bce + beta * kl, bce, kl


@register_objective("carso")
class CARSOObjective(Objective):
    """Train CARSO's purifier (the classifier stays frozen); the model must be ``create_model("carso", ...)``."""

    model_kind = "carso"

    Params: ClassVar[type[BaseModel]] = CARSOParams
    params: CARSOParams

    def __init__(self, cfg: ObjectiveConfig) -> None:
        super().__init__(cfg)
        p = self.params
        assert cfg.attack is not None
        if p.attacks is not None:
            self.attack_cfgs = list(p.attacks)
        else:
            strong = cfg.attack
            weak_eps = p.eps_weak if p.eps_weak is not None else strong.eps / 2
            if weak_eps > strong.eps:
                raise ConfigError(f"carso eps_weak ({weak_eps}) must not exceed the attack's eps ({strong.eps})")
            fgsm = AttackConfig(name="fgsm", norm=strong.norm, eps=strong.eps)
            self.attack_cfgs = [strong.model_copy(update={"eps": weak_eps}), strong,
                                fgsm.model_copy(update={"eps": weak_eps}), fgsm]
        if p.self_attacks:
            from robustlab.purification.carso.aggregation import check_aggregation

            check_aggregation(p.self_aggregation)
        self._epochs_done = 0.0

    def set_progress(self, epochs_done: float) -> None:
        super().set_progress(epochs_done)
        self._epochs_done = epochs_done

    @property
    def beta(self) -> float:
        """The KL weight at the current progress."""
        p = self.params
        return beta_schedule(self._epochs_done, lag=p.beta_lag_epochs, ramp=p.beta_ramp_epochs, beta_max=p.beta_max,
                             per_epoch=p.beta_per_epoch)

    def prepare_model_kwargs(self, name: str, kwargs: dict[str, Any], data: Any, *, seed: int,
                             device: torch.device) -> dict[str, Any]:
        """``layers: auto``: the layers chosen on the first :data:`AUTO_N` training points against this objective's
        strong attack on the classifier (:mod:`robustlab.purification.carso.layer_choice`), written into the config
        and checkpoint; any other ``layers`` unchanged."""
        from robustlab.purification.carso.layer_choice import AUTO_N, resolve_auto_layers

        if name != "carso":
            return kwargs
        idx = torch.arange(min(AUTO_N, len(data)))
        assert self.cfg.attack is not None
        return resolve_auto_layers(kwargs, data.float_images(idx), data.labels[idx], self.cfg.attack, seed=seed,
                                   device=device)

    def modules(self, model: nn.Module, example: Tensor) -> nn.Module | None:
        """No module of its own; checks once, before training, that CARSO's classifier is a trained one."""
        from robustlab.purification.carso.model import carso_of, check_same_dataset

        net, _ = carso_of(model)
        if not net.classifier_source:
            raise ConfigError("CARSO training needs a trained classifier: set "
                              "train.model.kwargs.classifier=runs/<classifier-run> (a run folder or checkpoint)")
        check_same_dataset(model)
        return None

    def batch_attacks(self, model: nn.Module) -> list[Attack]:
        """The attacks of one batch, in chunk order: on the classifier alone, then (``self_attacks``) end to end on
        CARSO itself through its ``self_aggregation`` view (the inference path: attacks run it in eval mode)."""
        from robustlab.purification.carso.evaluation import AggregationView
        from robustlab.purification.carso.model import carso_of

        net, _ = carso_of(model)
        attacks = [build_attack(c, net.classifier) for c in self.attack_cfgs]
        if self.params.self_attacks:
            view = AggregationView(model, self.params.self_aggregation)
            attacks += [build_attack(c, view) for c in self.params.self_attacks]
        return attacks

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Metrics]:
        from robustlab.purification.carso.model import carso_of

        net, wrapper = carso_of(model)
        x_in, source = mix_batch(x, y, self.batch_attacks(model), self.params.adv_fraction)
        rec_logits, mu, logvar = net.reconstruct_logits(wrapper.normalize(x_in) if wrapper is not None else x_in)
        beta = self.beta
        loss, bce, kl = vae_loss(rec_logits, x, mu, logvar, beta, logits=True)
        n = len(x)
        if self.params.reduction == "mean":
            loss = loss / n
        return loss, {"loss": float(loss.detach()), "bce_per_image": float(bce.detach()) / n,
                      "kl_per_image": float(kl.detach()) / n, "beta": beta,
                      "adv_fraction": float((source > 0).float().mean()),
                      "self_fraction": float((source > len(self.attack_cfgs)).float().mean())}
