"""RecBole's recommenders as teacher and student.

Each factory builds the RecBole model itself (`recbole.model.*`, constructed with a
RecBole Config holding the grid's sizes and the training split's RecBole dataset) and
wraps it in a module that speaks the harness's ranking protocol
(`harness.tasks.RankingModel`): `forward(batch)` scores every item, `score(batch,
items)` scores given items, `cf_loss(batch)` is the model's own RecBole loss
(`calculate_loss`), with negatives drawn by the wrapper uniformly from the items the
user has not trained on (RecBole's default sampler draws the same way).

Two-tower models (BPR, CDAE, Caser) also give `user_repr(batch)` [B, d] and
`item_repr(items)` [*, d], the representations DE-RRD's experts map (for CDAE the
hidden layer and the output layer's item weights; for Caser the sequence output and
the item embeddings).

Scores are logits (CDAE before its output sigmoid), so that saturation never ties
items in the ranking.

CDAE also gives `encode(batch)`, its training step's forward pass (`StepState`: one draw
of input corruption), which its `cf_loss` and `score` take, so that the model's loss
and a distiller's terms share it (`harness.tasks.RankingModel`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from harness.api import DataBundle, ModelFactory, Param
from harness.errors import UsageError

from . import rb
from .teacher import uniform_unobserved


def data_device(data: DataBundle) -> torch.device:
    return next(iter(data.train.tensors.values())).device


def build_net(name: str, data: DataBundle, options: dict[str, Any]) -> nn.Module:
    device = data_device(data)
    config = rb.make_config(name, Path(data.info["recbole_folder"]), options)
    config["device"] = device
    dataset = data.info.get("recbole_train_dataset", data.info["recbole_dataset"])
    with rb.quiet():
        net = rb.model_class(name)(config, dataset)
    return net.to(device)


class Shared:
    """Data a model reads but does not own: copies of the model (e.g. the best epoch's,
    kept by `select: best_val`) share it instead of duplicating it."""

    def __init__(self, value: torch.Tensor) -> None:
        self.value = value

    def __deepcopy__(self, memo: dict) -> Shared:
        return self


class Ranker(nn.Module):
    """Base of the wrappers: negatives, field names, item-wise scoring."""

    train_split: ClassVar[str] = "train"
    #: scores and representations depend on the row's user only (not on a context such
    #: as Caser's sequence): distillers may then work on a batch's unique users
    user_only: ClassVar[bool] = True

    def __init__(self, net: nn.Module, data: DataBundle) -> None:
        super().__init__()
        self.net = net
        self.n_items = int(data.info["n_items"])
        # which items each user trained on (data, not weights: never saved, never pruned;
        # a dense [n_users, n_items] mask, as the "history" split holds it)
        self._trained = Shared(data.split("history")["mask"])

    @property
    def trained(self) -> torch.Tensor:
        return self._trained.value

    def negatives(self, users: torch.Tensor, n: int = 1) -> torch.Tensor:
        """[B, n] items drawn uniformly from those the user has not trained on."""
        return uniform_unobserved(self.trained, users, n)

    def score(self, batch: dict[str, torch.Tensor], items: torch.Tensor) -> torch.Tensor:
        return self.forward(batch).gather(1, items)

    def prune_ignore(self) -> nn.Module | None:
        """Pruning keeps every output: no layer is exempt but an output Linear, if any."""
        return None


@dataclass(eq=False)
class StepState:
    """One training step's forward pass of a two-tower model, shared by every loss of
    the step (the model's own and a distiller's), as the official codes of RD and CD
    score all of a step's items in one forward pass: the rows' representations, made
    with one draw of the input corruption, the uncorrupted inputs they came from (the
    targets of an auto-encoder's loss), and every item's score once asked for."""

    repr: torch.Tensor
    inputs: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class TwoTower(Ranker, ABC):
    """score(u, i) = <user_repr(u), item_repr(i)> (+ item bias)."""

    #: score() gathers from every item's scores (one matmul, whose backward is two
    #: more) instead of gathering K item vectors [B, K, d] (whose backward scatters
    #: B·K rows) when K is at least this share of the catalogue (on ML-100K's 1,683
    #: items, one thread, 256 rows of 10 dimensions: about as fast at K = 80, 6.6 times
    #: faster at K = 800; equal within float rounding, tests/test_recsys_distillers.py)
    full_share: ClassVar[float] = 0.125

    def item_bias(self, items: torch.Tensor) -> torch.Tensor | float:
        return 0.0

    @abstractmethod
    def user_repr(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, d] the users' (or rows') representations."""

    @abstractmethod
    def item_repr(self, items: torch.Tensor) -> torch.Tensor:
        """[*, d] the items' representations."""

    @abstractmethod
    def all_item_repr(self) -> torch.Tensor:
        """[n_items, d] every item's representation."""

    def logits(self, u: torch.Tensor) -> torch.Tensor:
        """[B, n_items] every item's score for representations u [B, d]."""
        return u @ self.all_item_repr().T + self.item_bias(torch.arange(self.n_items, device=u.device))

    def forward(self, batch):
        # (the two-tower product itself, not `self.logits`: CDAE's training logits are
        # RecBole's addmm, and its evaluation keeps the arithmetic it always had)
        return TwoTower.logits(self, self.user_repr(batch))

    def score(self, batch, items, state: StepState | None = None):
        """[B, K] scores of `items`; with the step's `state` (from `encode`), from its
        representations (and its every-item scores, once computed) instead of a new
        forward pass."""
        if state is None:
            u = self.user_repr(batch)
        elif state.logits is not None or items.shape[1] >= self.full_share * self.n_items:
            return self.all_scores(state).gather(1, items)
        else:
            u = state.repr
        return (u[:, None, :] * self.item_repr(items)).sum(-1) + self.item_bias(items)

    def all_scores(self, state: StepState) -> torch.Tensor:
        """The step's [B, n_items] scores, computed once."""
        if state.logits is None:
            state.logits = self.logits(state.repr)
        return state.logits


class BPRRanker(TwoTower):
    def cf_loss(self, batch):
        net = self.net
        neg = self.negatives(batch["user"])[:, 0]
        return net.calculate_loss(
            {net.USER_ID: batch["user"], net.ITEM_ID: batch["item"], net.NEG_ITEM_ID: neg}
        )

    def user_repr(self, batch):
        return self.net.user_embedding(batch["user"])

    def item_repr(self, items):
        # (the embedding's rows by index_select, whose backward is one index_add: at
        # the ~45k rows a distiller's sample asks per step, 1.3x faster on this CPU
        # than nn.Embedding's backward; the same values)
        weight = self.net.item_embedding.weight
        return weight.index_select(0, items.reshape(-1)).view(*items.shape, weight.shape[1])

    def all_item_repr(self):
        return self.net.item_embedding.weight


class CDAERanker(TwoTower):
    """CDAE (Wu et al. 2016) trains on one row per user: its input is the user's whole
    training history, corrupted by dropout."""

    train_split = "users"

    def __init__(self, net, data, train_loss: str = "full", neg_ratio: float = 0.5) -> None:
        super().__init__(net, data)
        self.train_loss, self.neg_ratio = train_loss, neg_ratio

    def regulariser(self) -> torch.Tensor:
        """RecBole's CDAE regularisers (L1 and L2 norms of the user embedding and the
        input layer), unscaled."""
        net = self.net
        reg = net.reg_weight_1 * (net.h_user.weight.norm(p=1) + net.h_item.weight.norm(p=1))
        return reg + net.reg_weight_2 * (net.h_user.weight.norm() + net.h_item.weight.norm())

    def rating_rows(self, users: torch.Tensor) -> torch.Tensor:
        """[B, n_items] the users' training rows, 1.0 where trained: RecBole's
        `get_rating_matrix` (its history values are 1 for implicit feedback) read from
        the dense training mask instead of an index_put per call."""
        return self.trained.index_select(0, users).float()

    def encode(self, batch) -> StepState:
        """The step's forward pass up to the hidden layer, with one draw of the input
        corruption, for the loss and any distiller of the step (RecBole's CDAE.forward:
        dropout of the rating rows, then h_act(h_user(u) + h_item(·)))."""
        net, users = self.net, batch["user"]
        x = self.rating_rows(users)
        h = net.h_act(torch.add(net.h_user(users), net.h_item(net.dropout(x))))
        return StepState(h, inputs=x)

    def logits(self, u):
        return self.net.out_layer(u)  # (RecBole's forward: the same addmm, bit for bit)

    def cf_loss(self, batch, state: StepState | None = None):
        """The data term per user (a sum over items), averaged over the batch's users,
        as every other model's loss is a mean over rows, so that a distiller's weight
        means the same for all models; plus RecBole's regularisers. `state`: the step's
        forward pass (`encode`), made here when not given.

        full: RecBole's CDAE loss (`calculate_loss`, computed here from the step's
          forward pass), BCE on every item (observed = 1, all others = 0), or its MSE
          on the sigmoid for loss_type MSE.
        sampled: CDAE as the CD paper trains it (Lee et al. 2019, setup: negatives
          0.5·|I_u|, denoising 0.1) and as Wu et al. (WSDM 2016) train CDAE with
          negative sampling: BCE on the user's observed items and on ⌈neg_ratio·|I_u^+|⌉
          items drawn uniformly from the unobserved ones each step. (|I_u| read as the
          observed items: a multiple of the positives, as in Wu et al.)"""
        net, users = self.net, batch["user"]
        state = self.encode(batch) if state is None else state
        logits = self.all_scores(state)
        if self.train_loss == "full":
            if net.loss_type == "MSE":
                total = F.mse_loss(net.o_act(logits), state.inputs, reduction="sum")
            else:
                total = F.binary_cross_entropy_with_logits(logits, state.inputs, reduction="sum")
            # RecBole's sum with its regularisers, then the data term's mean: the same
            # arithmetic, operation for operation, as dividing `calculate_loss`'s result
            total = total + net.reg_weight_1 * (net.h_user.weight.norm(p=1) + net.h_item.weight.norm(p=1))
            total = total + net.reg_weight_2 * (net.h_user.weight.norm() + net.h_item.weight.norm())
            reg = self.regulariser()
            return (total - reg) / len(users) + reg
        pos = state.inputs
        n_neg = torch.ceil(self.neg_ratio * pos.sum(1).float()).long()
        neg = self.negatives(users, max(1, int(n_neg.max())))
        keep = torch.arange(neg.shape[1], device=neg.device)[None, :] < n_neg[:, None]
        data = -(F.logsigmoid(logits) * pos).sum(1)
        data = data - (F.logsigmoid(-logits.gather(1, neg)) * keep).sum(1)
        return data.mean() + self.regulariser()

    def user_repr(self, batch):
        return self.encode(batch).repr

    def item_repr(self, items):
        return self.net.out_layer.weight[items]

    def all_item_repr(self):
        return self.net.out_layer.weight

    def item_bias(self, items):
        return self.net.out_layer.bias[items]

    def prune_ignore(self):
        return self.net.out_layer


class CaserRanker(TwoTower):
    """Caser (Tang & Wang 2018) scores the next item from the user's latest L items
    (the last L of the row's `seq`).

    Losses: RecBole's CE (softmax over all items) or BPR; or BCE, the original Caser's
    and the CD paper's: −log σ(s_pos) − Σ_{n negatives} log(1 − σ(s_neg)), with
    RecBole's regularisers. Point-wise BCE makes σ(score) a probability, which CD's
    soft targets σ((t + T2)/T1) assume; CE scores are only defined up to a shift."""

    user_only = False

    def __init__(self, net, data, loss: str, neg_samples: int) -> None:
        super().__init__(net, data)
        self.loss, self.neg_samples = loss, neg_samples

    def seq(self, batch):
        return batch["seq"][:, -self.net.max_seq_length :]

    def cf_loss(self, batch):
        net, seq = self.net, self.seq(batch)
        if self.loss == "BCE":
            out = net.forward(batch["user"], seq)
            items = torch.cat([batch["item"][:, None], self.negatives(batch["user"], self.neg_samples)], 1)
            s = (out[:, None, :] * net.item_embedding(items)).sum(-1)
            data = -(F.logsigmoid(s[:, 0]) + F.logsigmoid(-s[:, 1:]).sum(1)).mean()
            weights = [net.user_embedding.weight, net.item_embedding.weight, net.conv_v.weight]
            reg = net.reg_loss([*weights, net.fc1.weight, net.fc2.weight])
            return data + net.reg_weight * reg + net.reg_loss_conv_h()
        inter = {
            net.USER_ID: batch["user"],
            net.ITEM_SEQ: seq,
            net.ITEM_SEQ_LEN: (seq > 0).sum(1),
            net.POS_ITEM_ID: batch["item"],
        }
        if net.loss_type == "BPR":
            inter[net.NEG_ITEM_ID] = self.negatives(batch["user"])[:, 0]
        return net.calculate_loss(inter)

    def user_repr(self, batch):
        return self.net.forward(batch["user"], self.seq(batch))

    def item_repr(self, items):
        return self.net.item_embedding(items)

    def all_item_repr(self):
        return self.net.item_embedding.weight


class NeuMFRanker(Ranker):
    """NeuMF (He et al. 2017): point-wise BCE on each positive and `neg_samples` drawn
    negatives. Not two-tower: scoring all items runs the MLP on every (user, item)."""

    def __init__(self, net, data, neg_samples: int) -> None:
        super().__init__(net, data)
        self.neg_samples = neg_samples

    def cf_loss(self, batch):
        net, u, pos = self.net, batch["user"], batch["item"]
        neg = self.negatives(u, self.neg_samples)
        users = torch.cat([u, u.repeat_interleave(self.neg_samples)])
        items = torch.cat([pos, neg.reshape(-1)])
        label = torch.cat(
            [torch.ones_like(pos), torch.zeros(neg.numel(), dtype=pos.dtype, device=pos.device)]
        )
        return net.calculate_loss({net.USER_ID: users, net.ITEM_ID: items, net.LABEL: label.float()})

    def score(self, batch, items):
        u = batch["user"][:, None].expand_as(items)
        return self.net.forward(u.reshape(-1), items.reshape(-1)).view_as(items)

    def forward(self, batch):
        u = batch["user"]
        items = torch.arange(self.n_items, device=u.device)
        return self.score(batch, items[None, :].expand(len(u), -1))

    def prune_ignore(self):
        return self.net.predict_layer


class NeuMFRater(nn.Module):
    """NeuMF as a rating regressor: its output (before RecBole's sigmoid) predicts the
    standardised rating of x = [user, item]."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward(x[:, 0], x[:, 1])

    def feature_layers(self):
        return [m for m in self.net.mlp_layers.modules() if isinstance(m, nn.Linear)]

    def prune_ignore(self):
        return self.net.predict_layer


# --------------------------------------------------------------------------- factories


class RecBoleModel(ModelFactory):
    """A RecBole model by name; `options` passes any other key of its RecBole config."""

    recbole_name: ClassVar[str] = ""
    prunable = frozenset({"unstructured"})
    tasks = frozenset({"ranking"})
    #: grid params that are RecBole config keys (passed through under the same name)
    recbole_keys: ClassVar[tuple[str, ...]] = ()

    def recbole_options(self) -> dict[str, Any]:
        opts = {k: self.hparams[k] for k in self.recbole_keys}
        opts.update(self.hparams.get("options") or {})
        return opts

    def build(self, data: DataBundle) -> nn.Module:
        if "recbole_folder" not in data.info:
            raise UsageError(f"model {self.name!r} needs a RecBole dataset (movielens-100k, recbole-atomic)")
        return self.wrap(build_net(self.recbole_name, data, self.recbole_options()), data)

    @abstractmethod
    def wrap(self, net: nn.Module, data: DataBundle) -> nn.Module:
        """The RecBole model `net` behind the harness's ranking (or rating) protocol."""


OPTIONS = Param({}, "further RecBole config keys for this model, e.g. {reg_weight: 1.0e-4}", type=dict)


class BPRFactory(RecBoleModel):
    name = "bpr"
    label = "BPR"
    description = "BPR-MF (Rendle et al. 2009), RecBole's BPR; pair-wise loss"
    recbole_name = "BPR"
    recbole_keys = ("embedding_size",)
    params = {"embedding_size": Param(64, "user/item embedding size"), "options": OPTIONS}
    presets = {"teacher": {"embedding_size": 200}, "student": {"embedding_size": 20}}

    def wrap(self, net, data):
        return BPRRanker(net, data)


class CDAEFactory(RecBoleModel):
    name = "cdae"
    label = "CDAE"
    description = "collaborative denoising auto-encoder (Wu et al. 2016), RecBole's CDAE"
    recbole_name = "CDAE"
    recbole_keys = ("embedding_size", "corruption_ratio", "loss_type", "reg_weight_2")
    params = {
        "embedding_size": Param(100, "hidden units (the CD paper: teacher 100, student 10)"),
        "corruption_ratio": Param(0.1, "input dropout (the CD paper's denoising ratio 0.1)"),
        "loss_type": Param("BCE", "RecBole's CDAE loss", choices=("BCE", "MSE")),
        "reg_weight_2": Param(0.01, "L2 weight of the user embedding and input layer"),
        "train_loss": Param(
            "full",
            "full: RecBole's BCE over every item; sampled: BCE over the observed items and "
            "neg_ratio·|I_u^+| drawn negatives (the CD paper's CDAE)",
            choices=("full", "sampled"),
        ),
        "neg_ratio": Param(0.5, "negatives per observed item for train_loss: sampled (the CD paper's 0.5)"),
        "options": OPTIONS,
    }
    presets = {"teacher": {"embedding_size": 100}, "student": {"embedding_size": 10}}

    @classmethod
    def check(cls, params, where):
        if params["neg_ratio"] <= 0:
            raise UsageError(f"{where}.neg_ratio: must be positive, got {params['neg_ratio']}")
        if params["train_loss"] == "sampled" and params["loss_type"] != "BCE":
            raise UsageError(f"{where}.train_loss: sampled is a BCE loss (loss_type: BCE)")

    def wrap(self, net, data):
        return CDAERanker(net, data, self.hparams["train_loss"], float(self.hparams["neg_ratio"]))


class CaserFactory(RecBoleModel):
    name = "caser"
    label = "Caser"
    description = "convolutional sequence embedding (Tang & Wang 2018), RecBole's Caser"
    recbole_name = "Caser"
    recbole_keys = ("embedding_size", "nh", "nv", "dropout_prob", "reg_weight", "loss_type")
    params = {
        "embedding_size": Param(50, "embedding size (the CD paper: teacher 50, student 5)"),
        "L": Param(5, "items of context (the CD paper's L=5); at most the dataset's history_length"),
        "nh": Param(16, "horizontal filters per height"),
        "nv": Param(4, "vertical filters"),
        "dropout_prob": Param(0.5, "dropout (the CD paper's 0.5)"),
        "reg_weight": Param(1e-6, "L2 weight"),
        "loss_type": Param(
            "BCE",
            "BCE with neg_samples negatives (the original Caser's and the CD paper's), "
            "or RecBole's CE over all items or BPR",
            choices=("BCE", "CE", "BPR"),
        ),
        "neg_samples": Param(3, "negatives per positive for BCE (the CD paper's 3)"),
        "options": OPTIONS,
    }
    presets = {"teacher": {"embedding_size": 50}, "student": {"embedding_size": 5}}

    def recbole_options(self):
        opts = {**super().recbole_options(), "MAX_ITEM_LIST_LENGTH": self.hparams["L"]}
        if opts["loss_type"] == "BCE":  # computed by the wrapper; RecBole's model is built for BPR
            opts["loss_type"] = "BPR"
        if opts["loss_type"] == "CE":  # RecBole's Config insists: CE draws no negatives
            opts["train_neg_sample_args"] = None
        return opts

    def build(self, data):
        length = data.info.get("history_length", 0)
        if self.hparams["L"] > length:
            raise UsageError(f"caser: L={self.hparams['L']} exceeds the dataset's history_length {length}")
        return super().build(data)

    def wrap(self, net, data):
        return CaserRanker(net, data, self.hparams["loss_type"], int(self.hparams["neg_samples"]))


class NeuMFFactory(RecBoleModel):
    name = "neumf"
    label = "NeuMF"
    description = "neural matrix factorisation (He et al. 2017), RecBole's NeuMF; ranking or rating"
    recbole_name = "NeuMF"
    tasks = frozenset({"ranking", "rating"})
    exposes_features = True  # rating view: the MLP tower's layers
    prunable = frozenset({"structured", "unstructured"})  # structured: the MLP's hidden units
    recbole_keys = ("mf_embedding_size", "mlp_embedding_size", "mlp_hidden_size", "dropout_prob")
    params = {
        "mf_embedding_size": Param(64, "GMF embedding size"),
        "mlp_embedding_size": Param(64, "MLP embedding size"),
        "mlp_hidden_size": Param([128, 64], "MLP hidden units", type=list),
        "dropout_prob": Param(0.1, "dropout in the MLP"),
        "neg_samples": Param(1, "negatives per positive (ranking)"),
        "options": OPTIONS,
    }
    presets = {
        "teacher": {"mf_embedding_size": 64, "mlp_embedding_size": 64, "mlp_hidden_size": [128, 64]},
        "student": {"mf_embedding_size": 8, "mlp_embedding_size": 8, "mlp_hidden_size": [16, 8]},
    }

    def wrap(self, net, data):
        if data.task == "rating":
            return NeuMFRater(net)
        return NeuMFRanker(net, data, int(self.hparams["neg_samples"]))
