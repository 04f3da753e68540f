"""The trainer: one training run of one avatar (data, model, optimisers, schedule, checkpoints).

    trainer = Trainer(TrainRequest(model_path="output/s000", source_path=SUBJECT,
                                   config_files=["configs/tensorial.yaml"], protocol="ga"))
    trainer.train()

It knows the model interface (:class:`scene.model.avatar.GaussianAvatar`: per-splat tensors,
parameter groups, losses, schedule hooks, checkpoint entries), never a method. ``train.py`` is its
command line. Every way a run ends leaves a state it resumes from exactly (exit codes on
:class:`TrainingStopped`): saved at the step boundary on a stop signal, the last good state on a
non-finite step, the last consistent state before any other exception propagates.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from flame_model import DEFAULT_FLAME_MODEL_PATH, frame_motion
from gaussian_renderer import select_backend
from gaussian_renderer.registry import get_backend
from scene.config import OptimConfig, TrainConfig, config_differences, load_saved_config, resolve_config, save_config
from scene.data.datasets import load_subject
from scene.data.frame_loader import frame_loader_for
from scene.data.mesh_cache import FlameSequence
from scene.data.protocols import protocol_splits, saved_protocol
from scene.data.subject_cache import SubjectCache, content_digest
from scene.model.avatar import GaussianAvatar, build_context, masks_needed
from scene.model.checkpoint import build_flame, load_avatar_components, save_avatar
from scene.model.components import LossContext
from scene.rendering import check_compile, render_avatar
from scene.training.class_balance import (ClassBalancedSampler, UniformSampler, cluster_cache_key, cluster_settings,
                                          cluster_timesteps, clusters_document, distance_cache_key,
                                          expression_distances, frame_draw_ratio, load_clusters, save_clusters)
from scene.training.densification import BindingAwareDensification
from scene.training.losses import photometric_loss
from scene.training.optimizer_ops import drop_frozen_gradients, make_network_optimizer, make_splat_optimizers
from utils.atomic import write_text_atomic
from utils.checkpoint import (capture_rng_state, checkpoint_path, list_checkpoints, load_state, restore_rng_state,
                              seed_everything, write_checkpoint)
from utils.cli_common import describe_device, even_subset, pick_device
from utils.errors import InputFileError, MissingFileError, UserFacingError
from utils.image_metrics import comparison_panel, psnr, ssim
from utils.phase_timer import DISABLED, PhaseTimer
from utils.stop_signals import STOP_EXIT_CODES, StopSignals

__all__ = ["TrainRequest", "Trainer", "TrainingStopped", "NonFiniteStep", "position_lr", "RESUMABLE_CHANGES",
           "isect_capacity_for",
           "splat_learning_rates", "EXIT_CRASHED", "EXIT_USER_ERROR", "EXIT_PREEMPTED", "EXIT_DIVERGED", "EXIT_INTERRUPTED", "STOP_SIGNALS"]


@dataclass
class TrainRequest:
    """What to train, as train.py's command line says it.

    Attributes:
        model_path: the output folder (``-m``).
        source_path: the subject folder (``-s``); with ``resume``, None = the saved one.
        config_files: YAML configs composed in order (later wins); overrides: dicts applied after
            them (``--set``, named flags).
        flame / flame_masks: FLAME files (None: the default, or the saved ones when resuming).
        protocol: ga | paper | none; None = none for a new run, the saved one when resuming.
        resume: continue the latest checkpoint; allow_changes: even with another setup (recorded).
        quiet: no progress bar or log lines.
    """

    model_path: str
    source_path: str | None = None
    config_files: list = field(default_factory=list)
    overrides: list = field(default_factory=list)
    flame: str | None = None
    flame_masks: str | None = None
    protocol: str | None = None
    resume: bool = False
    allow_changes: bool = False
    quiet: bool = False


# Keys that may change between a run and its resumption: they do not change what is learned.
# optim.iterations only moves the end: the schedule (decays, warm-up, SH degrees) stays that of the
# first run, and steps beyond it run at its final rates.
RESUMABLE_CHANGES = ("optim.iterations", "run.device", "run.backend", "run.eval_interval", "run.eval_max_frames",
                     "run.save_interval", "run.keep_checkpoints", "run.log_interval", "run.image_cache_gb",
                     "run.loader_workers", "run.prefetch_frames", "run.device_image_cache_gb", "run.check_finite",
                     "run.divergence_factor", "run.compile")

EXIT_CRASHED, EXIT_USER_ERROR, EXIT_PREEMPTED, EXIT_DIVERGED, EXIT_INTERRUPTED = 1, 2, 3, 4, 130
STOP_SIGNALS = STOP_EXIT_CODES  # {"SIGINT": EXIT_INTERRUPTED, "SIGTERM"/"SIGUSR1": EXIT_PREEMPTED}
#: Beside the checkpoints: {"<iteration>": training seconds up to that checkpoint, over every process}.
TRAIN_TIME_FILE = "train_time.json"


def read_train_times(model_dir: Path) -> dict:
    """The run's :data:`TRAIN_TIME_FILE` ({} where there is none, or none that reads: the times are
    a report, never a reason to stop a run)."""
    try:
        times = json.loads((model_dir / TRAIN_TIME_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return times if isinstance(times, dict) else {}


class TrainingStopped(Exception):
    """The loop stopped at a step boundary, its state saved; ``exit_code`` says why."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class NonFiniteStep(Exception):
    """A step's loss or gradient is not finite, or the loss diverged; nothing was updated."""


def splat_learning_rates(optim: OptimConfig, position_lr: float) -> dict[str, float]:
    """Learning rate of each core splat attribute (GaussianAvatars' rates): ``position_lr`` for
    the local positions (scheduled by the trainer), the config's rotation, scale and opacity
    rates. The components' per-splat attributes bring their own (``SplatAttribute.lr``)."""
    return {"xyz": position_lr, "rotation": optim.rotation_lr, "log_scale": optim.scaling_lr,
            "opacity": optim.opacity_lr}


def position_lr(cfg: TrainConfig, step: int, extent: float, schedule: int) -> float:
    """GA's log-linear decay of the position learning rate over ``schedule`` steps, scaled by the
    cameras' extent; constant at the final rate after the schedule."""
    t = min(max(step / max(schedule, 1), 0.0), 1.0)
    lr = math.exp((1 - t) * math.log(cfg.optim.position_lr_init) + t * math.log(cfg.optim.position_lr_final))
    return lr * extent


#: Intersection capacity over the previous step's (tile, splat) pairs (backends that take one).
ISECT_HEADROOM = 1.25


def isect_capacity_for(pairs: int, headroom: float = ISECT_HEADROOM) -> int:
    """The intersection capacity for ``pairs`` (tile, splat) pairs: ``pairs x headroom`` rounded up
    to a bucket, 2^k or 1.5 x 2^k (at least 1024), so that the capacity, and what is sized by it,
    changes only when the count moves by a good part of itself."""
    need = max(1024, math.ceil(pairs * headroom))
    power = 1 << (need - 1).bit_length()  # the power of two >= need
    return power * 3 // 4 if power * 3 // 4 >= need else power


class Trainer:
    """Everything one training run holds: data, avatar, optimisers, schedule, checkpoints.

    With a backend that takes an intersection capacity (the registry's ``takes_isect_capacity``:
    Triton), a step renders with a fixed-length (tile, splat) list sized from the previous step's
    count (:func:`isect_capacity_for`), so its forward pass never waits for the device; the count
    and the overflow are read with the step's one read-back (the finite check), and a step whose
    pairs did not fit is run again with a capacity that holds them, before anything is updated:
    the result is that of a step with enough capacity. ``isect_capacity`` is the next step's
    (None: the first step sizes its list exactly, one sync); ``isect_reruns`` counts re-runs.
    """

    def __init__(self, request: TrainRequest):
        self.request = request
        self.model_dir = Path(request.model_path)
        self.resume_changes: list[str] = []
        (self.cfg, self.source, flame_path, masks_path, self.resume_from, extra,
         self.protocol) = self._resolve_run(request)
        cfg = self.cfg
        # The schedule (decays, warm-up, SH degrees) is fixed by the run's first command.
        self.schedule_iterations = int(extra.get("schedule_iterations", cfg.optim.iterations))
        self.device = pick_device(cfg.run.device)
        self.backend = select_backend(cfg.run.backend, self.device)
        self.takes_capacity = get_backend(self.backend.name).takes_isect_capacity
        self.isect_capacity: int | None = None
        self.isect_reruns = 0
        if cfg.run.compile:
            check_compile(self.device, "run.compile")
        self.runtime = {"device": describe_device(self.device), "backend": self.backend.name,
                        "backend_reason": self.backend.reason}
        seed_everything(cfg.run.seed)
        self.log(f"[train] subject {self.source}  ->  {self.model_dir}  ({cfg.optim.iterations} iterations)")
        self.log(f"[train] device {self.runtime['device']}; {self.backend.describe()}")
        # Phases of the step (bench/step_profile.py switches it on); a no-op otherwise.
        self.timer: PhaseTimer = DISABLED
        self._cameras: dict = {}

        # What start-up derives from the subject (its parse, FLAME meshes, file checks, expression
        # classes), kept for every later run of it: resumes, seeds, ablations (scene/data/subject_cache.py).
        self.subject_cache = SubjectCache()
        self.subject = load_subject(self.source, resolution_scale=cfg.run.resolution_scale,
                                    image_cache_bytes=int(cfg.run.image_cache_gb * (1 << 30)),
                                    progress=not request.quiet, cache=self.subject_cache)
        splits = protocol_splits(self.subject, self.protocol)
        self.train_frames = splits["train"]
        if not self.train_frames:
            raise InputFileError(f"{self.source}: transforms_train.json has no frames to train on")
        # Training-time evaluation covers the union's held-out frames; the paper protocol's test
        # split (the FREE sequence) is rendered and scored by render.py / evaluate.py.
        self.eval_splits = {s: even_subset(splits[s], cfg.run.eval_max_frames) for s in ("val", "test") if splits[s]}
        # A missing, corrupt or wrong-size image is named now, not at the iteration that meets it;
        # masks are never read in training. Skipped when the same files passed and none changed.
        if not self.subject.check_files(self.train_frames + [f for fs in self.eval_splits.values() for f in fs],
                                        progress=not request.quiet, masks=False, cache=self.subject_cache):
            self.log("[train] images unchanged since their last check")

        self.flame = build_flame(cfg.model, {}, flame_path, masks_path).to(self.device)
        self._require_masks()
        self.flame_paths = (str(Path(self.flame.model_path).resolve()), None if self.flame.masks_path is None else str(Path(self.flame.masks_path).resolve()))
        self.sequence = FlameSequence(self.flame, {k: v.to(self.device) for k, v in self.subject.flame.items()},
                                      self.subject.shape.to(self.device),
                                      None if self.subject.static_offset is None else self.subject.static_offset.to(self.device),
                                      trainable=cfg.optim.train_flame)
        self.train_rows = sorted({self.subject.timestep_row[f.timestep] for f in self.train_frames})
        # Expression classes, or at least their distances, from an earlier run of these expressions:
        # then the clustering needs no expression meshes.
        self._classes, self._distances = None, None
        if cfg.sampling.class_balanced:
            self._cluster_timesteps, self._cluster_meta = self._cluster_settings()
            self._classes, self._distances = self._cached_timestep_classes()
        if not cfg.optim.train_flame:  # fine-tuned parameters change every step: nothing to cache
            need_meshes = cfg.sampling.class_balanced and self._classes is None and self._distances is None
            source = self.sequence.precompute(keep_expression_offsets=need_meshes, progress=not request.quiet,
                                              cache=self.subject_cache)
            self.log(f"[train] FLAME {self.flame.num_vertices} vertices / {self.flame.num_faces} faces; meshes of "
                     f"{self.sequence.num_timesteps} timesteps "
                     + ("read from the subject cache" if source == "read" else "computed"))
        # Timestep rows as device tensors, sliced per step: a host-built index would be a copy.
        self.row_index = torch.arange(self.sequence.num_timesteps, device=self.device)

        # The training timesteps' tracked FLAME parameters: data-driven set-up of components
        # (the feature lines' jaw bases), from the subject's files, not fine-tuned values.
        training_motion = {k: v[self.train_rows] for k, v in self.subject.flame.items()}
        context = build_context(cfg.model, self.flame, self.sequence.canonical_vertices(), training_motion)
        self.avatar = GaussianAvatar(cfg.model, context).to(self.device)
        self.extent = float(self.subject.cameras_extent)
        self._make_optimizers()
        self.strategy = BindingAwareDensification(cfg.densify, self.extent, self.flame.num_faces,
                                                  white_background=all(v == 1.0 for v in cfg.run.background),
                                                  bound=self.avatar.geometry.binds_splats)
        self.sampler = self._make_sampler()
        self.background = torch.tensor(cfg.run.background, dtype=torch.float32, device=self.device)
        self.step = 0
        # Training seconds before this process (those of the checkpoint resumed from, kept in
        # TRAIN_TIME_FILE: not in the checkpoint, whose bytes must not depend on the clock) and the
        # iteration they are counted from when that checkpoint's time was not recorded.
        self._seconds_before, self._seconds_counted_from = 0.0, None
        self._loop_start = None
        self.writer = self._tensorboard()
        if self.resume_from:
            self._load_latest_readable(self.resume_from)
        # Ground truth decoded ahead along the sampler's future draws (its state is final now).
        self.loader = frame_loader_for(self.subject, self.train_frames, self.device, self.sampler,
                                       depth=cfg.run.prefetch_frames, workers=cfg.run.loader_workers,
                                       device_cache_bytes=int(cfg.run.device_image_cache_gb * (1 << 30)))
        history = list(extra.get("resume_history", []))
        if self.resume_from and self.resume_changes:
            history.append({"iteration": self.step, "changes": self.resume_changes})
        save_config(cfg, self.model_dir / "config.yaml", extra={
            "source_path": str(Path(self.source).resolve()), "flame_model": self.flame_paths[0],
            "flame_masks": self.flame_paths[1], "eval": self.protocol != "none", "protocol": self.protocol,
            "runtime": self.runtime,
            "schedule_iterations": self.schedule_iterations, "resume_history": history})
        self._stop = StopSignals()  # the stop signals of the training loop (installed by train())
        self._updating = False
        self._loss_ema: float | None = None

    # -- set-up ---------------------------------------------------------------------------------

    def log(self, text: str) -> None:
        if not self.request.quiet:
            tqdm.write(text)

    def _resolve_run(self, request: TrainRequest):
        """(config, data path, FLAME path, masks path, checkpoints to resume from, saved extras, protocol).

        A folder with checkpoints continues only with --resume, and only with the same subject,
        FLAME files and config unless --allow-changes (then the differences are recorded). A
        folder with a config.yaml but no checkpoint (a refused or failed start) is simply reused.
        """
        overrides = list(request.overrides)
        saved_path = self.model_dir / "config.yaml"
        checkpoints = list_checkpoints(self.model_dir)
        if request.resume or (checkpoints and saved_path.is_file()):
            if not saved_path.is_file():
                raise MissingFileError(f"--resume: {saved_path} not found; nothing to resume in {self.model_dir}")
            if not request.resume:
                raise InputFileError(
                    f"{self.model_dir} already holds a checkpoint (iteration {checkpoints[-1][0]}); pass --resume to "
                    "continue it, or choose another -m folder")
            if not checkpoints:
                raise MissingFileError(f"--resume: {self.model_dir} has a config.yaml but no checkpoint; start it again "
                                       "without --resume")
            saved_cfg, extra = load_saved_config(self.model_dir)
            cfg = resolve_config(request.config_files, overrides, base=saved_cfg.to_dict())
            changes = config_differences(saved_cfg, cfg, ignore=RESUMABLE_CHANGES)
            source = request.source_path or extra.get("source_path")
            flame_path = request.flame or extra.get("flame_model") or str(DEFAULT_FLAME_MODEL_PATH)
            masks_path = request.flame_masks or extra.get("flame_masks")
            for name, given, saved in (("subject", request.source_path, extra.get("source_path")),
                                       ("FLAME model", request.flame, extra.get("flame_model")),
                                       ("FLAME masks", request.flame_masks, extra.get("flame_masks"))):
                if given and saved and str(Path(given).resolve()) != str(Path(saved).resolve()):
                    changes.append(f"{name}: {saved} -> {Path(given).resolve()}")
            trained_protocol = saved_protocol(extra)
            given_protocol = request.protocol
            if given_protocol is not None and given_protocol != trained_protocol:
                changes.append(f"protocol: {trained_protocol} -> {given_protocol}")
            if changes and not request.allow_changes:
                raise InputFileError(
                    f"--resume: {self.model_dir} was trained with another setup ({'; '.join(changes[:5])}"
                    f"{' ...' if len(changes) > 5 else ''}); pass --allow-changes to continue it anyway (the changes "
                    "are recorded in config.yaml), or choose another -m folder")
            self.resume_changes = changes
            return cfg, source, flame_path, masks_path, checkpoints, extra, given_protocol or trained_protocol
        if not request.source_path:
            raise InputFileError("-s SUBJECT is required (the folder with transforms_train.json)")
        cfg = resolve_config(request.config_files, overrides)
        try:
            self.model_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputFileError(f"cannot create the output folder {self.model_dir}: {exc.strerror or exc}; "
                                 "choose a writable -m folder") from None
        return (cfg, request.source_path, request.flame or str(DEFAULT_FLAME_MODEL_PATH), request.flame_masks, [], {},
                request.protocol or "none")

    def _require_masks(self) -> None:
        """Components (and class-balanced sampling) that read FLAME's region masks; without them the
        method would quietly change (boxes, clustering weights, penalty regions covering everything)."""
        needs = masks_needed(self.cfg.model) + (["class-balanced sampling"] if self.cfg.sampling.class_balanced else [])
        if needs:
            self.flame.require_masks_file(", ".join(needs))

    def _make_optimizers(self) -> None:
        o = self.cfg.optim
        lrs = splat_learning_rates(o, position_lr(self.cfg, 0, self.extent, self.schedule_iterations))
        lrs.update({name: spec.lr for name, spec in self.avatar.splat_attributes().items()})
        self.optimizers = make_splat_optimizers(self.avatar.gaussians, lrs)
        groups = self.avatar.param_groups()
        self.net_optimizer = make_network_optimizer(groups)
        self.flame_optimizer = None
        if o.train_flame:
            v = self.sequence.values
            self.flame_optimizer = torch.optim.Adam([
                {"params": [v["expr"]], "lr": o.flame_expr_lr, "name": "expr"},
                {"params": [v["rotation"], v["neck_pose"], v["jaw_pose"], v["eyes_pose"]], "lr": o.flame_pose_lr, "name": "pose"},
                {"params": [v["translation"]], "lr": o.flame_trans_lr, "name": "translation"},
            ])

    def _make_sampler(self):
        frame_timesteps = [self.subject.timestep_row[f.timestep] for f in self.train_frames]
        seed = self.cfg.run.seed
        if not self.cfg.sampling.class_balanced:
            return UniformSampler(len(self.train_frames), seed=seed)
        labels = self._timestep_classes()
        frame_labels = [labels[self.train_rows.index(r)] for r in frame_timesteps]
        sampler = ClassBalancedSampler(frame_labels, seed=seed, balance=self.cfg.sampling.balance)
        sizes = sorted((int(np.sum(np.asarray(labels) == c)) for c in set(labels)), reverse=True)
        balance = self.cfg.sampling.balance
        self.log(f"[train] {len(sizes)} expression classes of {', '.join(map(str, sizes))} timesteps; sampling "
                 f"balance {balance:g}{' (class-uniform, the paper)' if balance == 1 else ''}: a frame of the "
                 f"smallest class is drawn {frame_draw_ratio(sizes, balance):.1f}x as often as one of the largest")
        return sampler

    def _cluster_settings(self) -> tuple[list[int], dict]:
        """(training timesteps, :func:`cluster_settings`): the labels depend on the FLAME model and
        masks, the identity and the training timesteps' expression, jaw and eye parameters (the
        subject's tracked values: clustering precedes any fine-tuning), and the settings."""
        timesteps = [self.subject.timesteps[r] for r in self.train_rows]
        flame = self.subject.flame
        static_offset = self.subject.static_offset
        inputs = content_digest(
            ["expression classes", timesteps]
            + [flame[k][self.train_rows].float() for k in ("expr", "jaw_pose", "eyes_pose")]
            + [self.subject.shape.float(), "none" if static_offset is None else static_offset.float()]
            + [x for name, buffer in sorted(self.flame.named_buffers()) for x in (name, buffer)]
            + [x for name in ("face", "eye_region") for x in (name, self.flame.vertex_masks.get(name, "none"))])
        return timesteps, cluster_settings(self.cfg.sampling.n_classes, self.cfg.run.seed, inputs)

    def _cached_timestep_classes(self) -> tuple[list[int] | None, torch.Tensor | None]:
        """(classes, distances) from earlier runs of the same expressions: the classes of the same
        settings from this run's own OUTPUT/clusters.json (a resume keeps its classes) or the subject
        cache, else the (T, T) distances from the subject cache (any seed or number of classes);
        None for what neither holds."""
        timesteps, meta = self._cluster_timesteps, self._cluster_meta
        shared = self.subject_cache.path("expression_classes", cluster_cache_key(timesteps, meta))
        for path in (self.model_dir / "clusters.json", shared):
            cached = load_clusters(path, timesteps, meta)
            if cached is not None:
                if path == shared:
                    self.log(f"[train] expression classes from the subject cache ({path})")
                return [int(v) for v in cached[0]], None
        key = distance_cache_key(timesteps, meta["inputs"])
        distances = self.subject_cache.read_array("expression_distances", key)
        if distances is None or distances.shape != (len(timesteps), len(timesteps)) or distances.dtype != np.float32:
            return None, None
        self.log(f"[train] expression distances from the subject cache "
                 f"({self.subject_cache.array_path('expression_distances', key)})")
        return None, torch.from_numpy(distances)

    def _timestep_classes(self) -> list[int]:
        """Spectral clusters of the training timesteps' expressions (cached in OUTPUT/clusters.json
        and in the subject cache, with their distances, for every run of these expressions)."""
        timesteps, meta = self._cluster_timesteps, self._cluster_meta
        labels, distances = self._classes, self._distances
        n_classes = self.cfg.sampling.n_classes
        if labels is None:
            if distances is None:
                self.log(f"[train] expression distances of {len(timesteps)} training timesteps on {self.device.type}")
                rows = torch.tensor(self.train_rows, device=self.device)
                offsets = self.sequence.expression_offsets(rows)  # precompute's meshes when it kept them
                self.sequence.release_expression_offsets()
                distances = expression_distances(offsets, self.flame.vertex_masks, progress=not self.request.quiet)
                del offsets
                self.subject_cache.write_array("expression_distances", distance_cache_key(timesteps, meta["inputs"]),
                                               distances.numpy())
            self.log(f"[train] clustering {len(timesteps)} training timesteps into {n_classes} expression classes")
            labels = [int(v) for v in cluster_timesteps(distances, n_classes=n_classes, seed=self.cfg.run.seed)]
            self.subject_cache.write("expression_classes", cluster_cache_key(timesteps, meta),
                                     clusters_document(labels, timesteps, meta))
        self._distances = None
        if load_clusters(self.model_dir / "clusters.json", timesteps, meta) is None:
            save_clusters(self.model_dir / "clusters.json", labels, timesteps, meta)
        return list(labels)

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard is optional
            return None
        return SummaryWriter(str(self.model_dir / "tensorboard"))

    # -- one iteration --------------------------------------------------------------------------

    def _camera(self, frame) -> tuple[torch.Tensor, torch.Tensor]:
        """The frame's (4, 4) viewmat and (3, 3) K on the device, copied once per frame."""
        key = (str(frame.image_path), frame.camera_index, frame.timestep)
        cam = self._cameras.get(key)
        if cam is None:
            cam = self._cameras[key] = (frame.viewmat.to(self.device), frame.K.to(self.device))
        return cam

    def render_frame(self, frame, step: int, timer: PhaseTimer = DISABLED, isect_capacity: int | None = None):
        """Render a subject frame as the avatar is at ``step`` of the schedule (its hooks set first)."""
        self.avatar.set_step(step, self.schedule_iterations)
        row = self.subject.timestep_row[frame.timestep]
        with timer("flame"):
            rows = self.row_index[row:row + 1]
            verts = self.sequence.vertices(rows)[0]
            p = self.sequence.row_params(rows)
            viewmat, K = self._camera(frame)
        return render_avatar(self.avatar, verts, frame_motion(p), viewmat, K, frame.width, frame.height,
                             self.background, backend=self.backend.name, timer=timer, isect_capacity=isect_capacity,
                             compile=self.cfg.run.compile), row

    def training_step(self, step: int) -> dict:
        """One iteration. Returns device tensors (loss, l1, psnr, penalty) and host facts (splats,
        densification events). The only wait for the GPU is the read-back before the update (the
        finite check, ``run.check_finite``, and with a capacity the step's intersection count);
        the loop reads the returned tensors only at its logging interval."""
        cfg, o, timer = self.cfg, self.cfg.optim, self.timer
        for group in self.optimizers["xyz"].param_groups:
            group["lr"] = position_lr(cfg, step, self.extent, self.schedule_iterations)
        index = self.sampler.next()
        frame = self.train_frames[index]
        with timer("data"):
            gt = self.loader.get(index)
        while True:
            capacity = self.isect_capacity if self.takes_capacity else None
            result, row = self.render_frame(frame, step, timer, capacity)
            image = result.image
            with timer("loss"):
                loss, l1, d_ssim = photometric_loss(image, gt, o.lambda_dssim)
                rows = self.row_index[row:row + 1]
                terms = self.avatar.losses(LossContext(
                    step, result.splats, result.meta, self.avatar.gaussians.params, self.avatar.gaussians.binding,
                    triangle_displacement=lambda: self.sequence.triangle_displacement(rows)[0],
                    features=result.features, gt=gt, image=image))
                for term in terms.values():
                    loss = loss + term
            with timer("backward"):
                loss.backward()
            named = {"loss": loss, "l1": l1, "d_ssim": d_ssim, **terms}
            pairs = result.meta["n_isects"] if self.takes_capacity else None
            values, pairs = self._read_back(named if cfg.run.check_finite else None, pairs)
            if pairs is not None:
                fits = capacity is None or pairs <= capacity
                # Grow at once; shrink only when far too large, so the list's size seldom changes.
                wanted = isect_capacity_for(pairs)
                if self.isect_capacity is None or wanted > self.isect_capacity or 4 * wanted <= self.isect_capacity:
                    self.isect_capacity = wanted
                if not fits:  # pairs were dropped: run the step again with room for them, nothing updated
                    for opt in self._all_optimizers():
                        opt.zero_grad(set_to_none=True)
                    self.isect_reruns += 1
                    continue
            break
        if values is not None:
            self._judge_finite(step, values)

        self._updating = True  # from here an exception would leave a half-updated state
        with torch.no_grad():
            with timer("densification"):
                self.strategy.update_statistics(result.meta, *result.raster_size)
            with timer("optimisers"):
                if self.net_optimizer is not None:
                    drop_frozen_gradients(self.net_optimizer, step)
                for opt in self._all_optimizers():
                    opt.step()
                    opt.zero_grad(set_to_none=True)
            with timer("densification"):
                events = self.strategy.step(step, self.avatar.gaussians, self.optimizers,
                                            self.avatar.canonical_world_scales())
                if any(events.get(k) for k in ("cloned", "split", "pruned")):
                    self.avatar.splats_changed()
            mse = ((image - gt) ** 2).mean()
        self._updating = False
        return {"loss": loss.detach(), "l1": l1.detach(), "psnr": -10 * torch.log10(mse.clamp_min(1e-10)),
                "terms": {k: v.detach() for k, v in terms.items()}, "splats": len(self.avatar.gaussians), **events}

    def _trainable_grads(self) -> list[torch.Tensor]:
        return [p.grad for opt in self._all_optimizers() for group in opt.param_groups for p in group["params"]
                if p.grad is not None]

    def _read_back(self, terms: dict | None, pairs) -> tuple[dict | None, int | None]:
        """The step's one host-device sync: the loss ``terms`` and the gradient norm (None: no
        finite check) and the intersection count ``pairs`` (a 0-dim tensor or int; None: none), read
        together. Returns ({name: float} or None, pairs as an int or None)."""
        pairs_tensor = pairs if torch.is_tensor(pairs) else None
        if terms is None:
            return None, (int(pairs_tensor) if pairs_tensor is not None else pairs)
        grads = self._trainable_grads()
        grad_norm = torch.stack([torch.linalg.vector_norm(g) for g in grads]).sum() if grads else torch.zeros(())
        values = torch.stack([t.detach().float().reshape(()) for t in terms.values()] + [grad_norm.float()])
        if pairs_tensor is None:
            host = values.tolist()
        else:  # float64: exact for any count of pairs
            host = torch.cat([values.double(), pairs_tensor.double().reshape(1)]).tolist()
            pairs = int(host.pop())
        return dict(zip(list(terms) + ["gradient norm"], host)), pairs

    def _judge_finite(self, step: int, named: dict) -> None:
        """Raise NonFiniteStep before the update when a loss term or the gradient norm (``named``,
        read by :meth:`_read_back`: one host-device sync per step, as AMP's grad scaler does;
        ``run.check_finite=false`` removes it) is not finite, or the loss exceeds
        ``run.divergence_factor`` x its running mean."""
        bad = [k for k, v in named.items() if not math.isfinite(v)]
        loss = named["loss"]
        factor = self.cfg.run.divergence_factor
        if not bad and self._loss_ema is not None and factor > 0 and step > 100 and loss > factor * self._loss_ema:
            bad = [f"loss {loss:.4g} > {factor:g} x its running mean {self._loss_ema:.4g} (diverging)"]
        if bad:
            for opt in self._all_optimizers():
                opt.zero_grad(set_to_none=True)
            terms_text = ", ".join(f"{k} {v:.4g}" for k, v in named.items())
            raise NonFiniteStep(f"iteration {step}: {'non-finite ' if not bad[0].startswith('loss ') else ''}"
                                f"{', '.join(bad)} ({terms_text}); the update was not applied")
        self._loss_ema = loss if self._loss_ema is None else 0.99 * self._loss_ema + 0.01 * loss

    def _all_optimizers(self):
        opts = list(self.optimizers.values())
        if self.net_optimizer is not None:
            opts.append(self.net_optimizer)
        if self.flame_optimizer is not None:
            opts.append(self.flame_optimizer)
        return opts

    @torch.no_grad()
    def evaluate(self, step: int) -> dict:
        """Mean PSNR/SSIM per held-out split, each frame with its own opacity offsets."""
        results = {}
        for split, frames in self.eval_splits.items():
            values = []
            for index, frame in enumerate(frames):
                result, _ = self.render_frame(frame, max(step, 1))
                gt = self.subject.load_image(frame).to(self.device)
                values.append((float(psnr(result.image, gt)),
                               float(ssim(result.image.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None]).mean())))
                if index == 0:  # the split's first frame: the same one at every evaluation
                    self._tensorboard_image(split, result.image, gt, step)
            arr = np.asarray(values)
            results[split] = {"PSNR": float(arr[:, 0].mean()), "SSIM": float(arr[:, 1].mean()), "n_images": len(values)}
        return results

    def _tensorboard_image(self, split: str, image: torch.Tensor, gt: torch.Tensor, step: int) -> None:
        """``<split>/render_gt_error`` in TensorBoard: render | ground truth | error, side by side
        (the panel of render.py's videos); flushed, so that it shows while training goes on."""
        if self.writer is None:
            return
        panel = comparison_panel(image, gt)
        self.writer.add_image(f"{split}/render_gt_error", panel.cpu(), step, dataformats="HWC")
        self.writer.flush()

    # -- persistence ----------------------------------------------------------------------------

    def save(self, step: int) -> Path:
        def writer(folder: Path) -> None:
            save_avatar(folder, self.avatar, self.sequence.shape, self.sequence.static_offset)
            if self.cfg.optim.train_flame:
                torch.save({k: v.detach().cpu() for k, v in self.sequence.values.items()}, folder / "flame_params.pt")
            torch.save({
                "iteration": step,
                "splat_optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
                "net_optimizer": None if self.net_optimizer is None else self.net_optimizer.state_dict(),
                "flame_optimizer": None if self.flame_optimizer is None else self.flame_optimizer.state_dict(),
                "strategy": self.strategy.state_dict(),
                "sampler": self.sampler.state_dict(),
                "rng": capture_rng_state(),
            }, folder / "training_state.pt")
        path = write_checkpoint(self.model_dir, step, writer, keep=self.cfg.run.keep_checkpoints)
        times = read_train_times(self.model_dir)
        times[str(step)] = self.training_seconds()
        write_text_atomic(self.model_dir / TRAIN_TIME_FILE, json.dumps(times, indent=1))
        return path

    def training_seconds(self) -> float:
        """Seconds of training so far, over every process of this run (resumes included)."""
        return self._seconds_before + (0.0 if self._loop_start is None else time.time() - self._loop_start)

    def _load_latest_readable(self, checkpoints: list) -> None:
        """Resume from the newest checkpoint that reads back; a corrupt one is skipped with a warning."""
        for iteration, folder in reversed(checkpoints):
            try:
                self._load_training_state(folder)
                return
            except UserFacingError as exc:
                print(f"[train] warning: checkpoint iteration {iteration} cannot be read ({exc}); "
                      "trying the previous one", file=sys.stderr)
        raise InputFileError(f"--resume: no readable checkpoint in {self.model_dir / 'checkpoints'}; start a new run "
                             "in another -m folder")

    def _load_training_state(self, folder: Path) -> None:
        state = load_state(folder / "training_state.pt", map_location=self.device)
        flame_state = load_state(folder / "flame_params.pt") if self.cfg.optim.train_flame else None
        load_avatar_components(self.avatar, folder)
        if flame_state is not None:
            with torch.no_grad():
                for k, v in flame_state.items():
                    self.sequence.values[k].copy_(v)
        self._make_optimizers()
        for k, opt in self.optimizers.items():
            opt.load_state_dict(state["splat_optimizers"][k])
        if self.net_optimizer is not None:
            self.net_optimizer.load_state_dict(state["net_optimizer"])
        if self.flame_optimizer is not None:
            self.flame_optimizer.load_state_dict(state["flame_optimizer"])
        self.strategy.load_state_dict(state["strategy"])
        self.sampler.load_state_dict(state["sampler"])
        restore_rng_state(state["rng"])
        self.step = int(state["iteration"])
        recorded = read_train_times(self.model_dir).get(str(self.step))
        self._seconds_before, self._seconds_counted_from = ((float(recorded), None) if recorded is not None
                                                            else (0.0, self.step))
        self.log(f"[train] resumed from {folder} (iteration {self.step}, {len(self.avatar.gaussians)} splats)")

    def save_consistent(self) -> Path | None:
        """Save the state after ``self.step`` completed steps unless that checkpoint exists already."""
        if self.step == 0:
            return None
        existing = checkpoint_path(self.model_dir, self.step)
        return existing if existing.is_dir() else self.save(self.step)

    # -- the loop -------------------------------------------------------------------------------

    def request_stop(self, signal_name: str) -> None:
        """Stop at the next step boundary, saved, as if ``signal_name`` (a key of
        :data:`STOP_SIGNALS`) had arrived during training: for a stop that came while the run was
        starting, before :meth:`train` had its handlers up."""
        self._stop.request(signal_name)

    def train(self) -> dict:
        """Run the remaining steps. Raises TrainingStopped (state saved) on a stop signal or a
        non-finite step; any other exception saves the last consistent state first."""
        try:
            with self._stop:
                return self._train_loop()
        finally:
            self.loader.close()
            if self.writer is not None:
                self.writer.flush()  # the last evaluation's scalars and images

    def _train_loop(self) -> dict:
        cfg = self.cfg
        total = cfg.optim.iterations
        if self.step > 0 and total > self.schedule_iterations:
            self.log(f"[train] training to {total} iterations; the schedule stays that of {self.schedule_iterations} "
                     "and later steps run at its final rates")
        log_path = self.model_dir / "train_log.jsonl"
        bar = tqdm(total=total, initial=min(self.step, total), desc="train", disable=self.request.quiet, dynamic_ncols=True)
        start = self._loop_start = time.time()
        last_eval: dict = {}
        ema_loss = ema_psnr = None  # device tensors: read (a sync) only at the logging interval
        try:
            while self.step < total:
                step = self.step + 1
                # An exception before the update leaves the parameters of step - 1; the sampler
                # must then be put back to match them.
                sampler_before = self.sampler.state_dict()
                try:
                    stats = self.training_step(step)
                except BaseException:
                    if not self._updating:
                        self.sampler.load_state_dict(sampler_before)
                    raise
                self.step = step
                ema_loss = stats["loss"] if ema_loss is None else 0.9 * ema_loss + 0.1 * stats["loss"]
                ema_psnr = stats["psnr"] if ema_psnr is None else 0.9 * ema_psnr + 0.1 * stats["psnr"]
                if step % cfg.run.log_interval == 0 or step == total:
                    bar.set_postfix(loss=f"{float(ema_loss):.4f}", psnr=f"{float(ema_psnr):.2f}", splats=stats["splats"])
                    if self.writer is not None:
                        for k in ("loss", "l1", "psnr", "splats"):
                            self.writer.add_scalar(f"train/{k}", float(stats[k]), step)
                        for k, v in stats["terms"].items():
                            self.writer.add_scalar(f"train/{k}", float(v), step)
                if any(k in stats for k in ("cloned", "split", "pruned", "opacity_reset")):
                    self.log(f"[train] iteration {step}: " + ", ".join(
                        f"{k} {stats[k]}" for k in ("cloned", "split", "pruned", "opacity_reset") if k in stats)
                        + f" -> {stats['splats']} splats")
                if self.eval_splits and (step % cfg.run.eval_interval == 0 or step == total):
                    last_eval = self.evaluate(step)
                    self.log(f"[eval] iteration {step}: " + "  ".join(
                        f"{s} PSNR {r['PSNR']:.2f} SSIM {r['SSIM']:.4f}" for s, r in last_eval.items()))
                    with open(log_path, "a") as fh:
                        fh.write(json.dumps({"iteration": step, "eval": last_eval, "splats": stats["splats"],
                                             "elapsed_s": time.time() - start}) + "\n")
                    if self.writer is not None:
                        for s, r in last_eval.items():
                            self.writer.add_scalar(f"{s}/psnr", r["PSNR"], step)
                if step % cfg.run.save_interval == 0 or step == total:
                    self.save(step)
                bar.update(1)
                if self._stop.received is not None and step < total:  # after the last step: done, not stopped
                    path = self.save_consistent()
                    raise TrainingStopped(f"stopped by {self._stop.received} at iteration {self.step}: saved {path}; "
                                          "continue with --resume", self._stop.exit_code)
        except NonFiniteStep as exc:
            bar.close()
            path = self.save_consistent()
            raise TrainingStopped(f"{exc}. Saved the last good state ({path}); lower the learning rates or fix the "
                                  "config, then continue with --resume --allow-changes", EXIT_DIVERGED) from None
        except (TrainingStopped, KeyboardInterrupt):
            bar.close()
            raise
        except BaseException:
            bar.close()
            if not self._updating:
                path = self.save_consistent()
                if path is not None:
                    print(f"[train] saved the last consistent state before stopping: {path}", file=sys.stderr)
            raise
        bar.close()
        elapsed = time.time() - start
        total_seconds = self._seconds_before + elapsed
        summary = {"iterations": self.step, "splats": len(self.avatar.gaussians), "train_seconds": total_seconds,
                   "train_seconds_this_process": elapsed, "eval": last_eval, **self.runtime}
        if self._seconds_counted_from is not None:  # resumed from a checkpoint whose time was not recorded
            summary["train_seconds_counted_from_iteration"] = self._seconds_counted_from
        (self.model_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
        self.log(f"[train] done: {self.step} iterations, {len(self.avatar.gaussians)} splats, {total_seconds:.0f} s")
        return summary


