"""The run directory's checkpoints: their format, loading a trained structure back, describing one in words, and
repairing a run whose files a half-done write left out of step."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from pyro_vae.catalog import BEST_CHECKPOINT, CHECKPOINT, CHECKPOINT_CHOICES, CONFIG, METRICS
from pyro_vae.config import TrainConfig, best_row, selection_name
from pyro_vae.devices import resolve_device
from pyro_vae.errors import CheckpointError, PyroVAEError, first_line
from pyro_vae.files import load_checkpoint_file, save_checkpoint, write_json, write_text
from pyro_vae.models import LatentStructure, build_model, is_file_spec


CHECKPOINT_FORMAT = ("pyro-vae-checkpoint", 1)


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint (checksum checked, ``weights_only=True``: tensors and plain data only) and check its format."""
    if not path.is_file():
        if path.name == CHECKPOINT and (path.parent / BEST_CHECKPOINT).is_file():
            raise CheckpointError(f"the run {path.parent} has no {CHECKPOINT} (deleted?), so it cannot be continued or "
                                  f"read at its last epoch; --checkpoint best reads its {BEST_CHECKPOINT}")
        raise CheckpointError(f"no checkpoint at {path}; is this a run directory written by 'pyro-vae train'?")
    try:
        checkpoint = load_checkpoint_file(path)  # checks the SHA-256 written with it
    except CheckpointError as err:
        if path.name != CHECKPOINT:
            raise
        raise CheckpointError(f"{first_line(err)}; the run cannot be continued from it: train afresh in another "
                              f"--run-dir (or move {path.parent} away); its {BEST_CHECKPOINT}, if whole, can still be "
                              "read with --checkpoint best") from None
    if not isinstance(checkpoint, dict) or tuple(checkpoint.get("format", ())) != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a pyro-vae checkpoint of format {CHECKPOINT_FORMAT}")
    return checkpoint


def load_trained_model(run_dir: str | Path, device: str = "cpu",
                       which: str = "last") -> tuple[LatentStructure, TrainConfig, dict]:
    """The structure saved in ``run_dir``, its config, and the checkpoint it came from.

    ``which`` is "last" (the end of the last epoch trained, ``checkpoint.pt``) or "best" (the epoch with the
    highest validation ELBO, ``best.pt``; runs written before best checkpoints existed fall back to the last,
    and the checkpoint's ``"kind"`` says which was loaded). :func:`describe_checkpoint` puts it in words.
    """
    if which not in CHECKPOINT_CHOICES:
        raise PyroVAEError(f"unknown checkpoint {which!r}; choose best or last")
    path = Path(run_dir) / (BEST_CHECKPOINT if which == "best" else CHECKPOINT)
    if which == "best" and not path.is_file() and (Path(run_dir) / CHECKPOINT).is_file():
        path = Path(run_dir) / CHECKPOINT
    checkpoint = load_checkpoint(path)
    checkpoint.setdefault("kind", "best" if path.name == BEST_CHECKPOINT else "last")
    if checkpoint["kind"] == "best":  # how far the run went, for describe_checkpoint
        checkpoint["epochs_trained"] = _epochs_trained(Path(run_dir), checkpoint["epoch"])
    config = TrainConfig.from_dict(checkpoint["config"])
    if is_file_spec(config.model) and not checkpoint.get("structure_source"):
        # a run written before runs kept their structure's source: the file must still be where it was
        path = config.model.rpartition(":")[0]
        if not Path(path).is_file():
            raise CheckpointError(f"the run {run_dir} was trained with the structure in {path}, which is not found "
                                  "from here; this run predates runs that keep their structure, so start from "
                                  "the folder it was trained in")
    model = build_model(config.model, structure_source=checkpoint.get("structure_source"), **checkpoint["model_config"])
    _load_model_state(model, checkpoint, path)
    return model.to(resolve_device(device)), config, checkpoint


def best_checkpoint(config: TrainConfig | dict, model_config: dict, model_state: dict, row: dict, step: int,
                    structure_source: Optional[dict]) -> dict:
    """What ``best.pt`` holds: the model of the epoch of the metrics ``row``."""
    return {"format": list(CHECKPOINT_FORMAT), "kind": "best",
            "config": asdict(config) if isinstance(config, TrainConfig) else config,
            "model_config": model_config, "epoch": row["epoch"], "step": step, "valid_elbo": row["valid_elbo"],
            "valid_bound": row.get("valid_bound"), "valid_accuracy": row.get("valid_accuracy"),
            "model_state": model_state, "structure_source": structure_source}


def repair_run(run_dir: str | Path, checkpoint: Optional[dict] = None) -> list[str]:
    """Make the files of a run agree with its ``checkpoint.pt`` after a write that stopped half-way (a full disk, a
    kill between two files); returns one sentence per file repaired (none for a consistent run). ``checkpoint``:
    the run's ``checkpoint.pt`` when the caller has read it already.

    The checkpoint is written first at the end of an epoch and holds the whole history, so it is the record:
    ``metrics.jsonl`` and ``config.json`` are rewritten from it when they lag; ``best.pt`` is rewritten from it when the
    history's best epoch is the checkpoint's own (the model in both) and ``best.pt`` is missing or holds another
    epoch. A ``best.pt`` of an epoch the checkpoint never finished (written before it by older versions) whose true
    best is lost is set aside as ``best.pt.unfinished-epoch-N`` rather than kept as if it were the best.
    """
    run_dir = Path(run_dir)
    checkpoint = checkpoint if checkpoint is not None else load_checkpoint(run_dir / CHECKPOINT)
    history, epoch, repaired = checkpoint.get("history") or [], checkpoint["epoch"], []
    lines = "".join(json.dumps(row) + "\n" for row in history)
    try:
        metrics = (run_dir / METRICS).read_text()
    except OSError:
        metrics = None
    _check_same_run(run_dir, checkpoint, metrics)
    if metrics != lines:
        write_text(run_dir / METRICS, lines)
        write_json(checkpoint["config"], run_dir / CONFIG)
        repaired.append(f"{METRICS} rewritten from {CHECKPOINT} (epoch {epoch})")
    best = best_row(history, checkpoint["config"].get("select_by") or "elbo")
    best_path = run_dir / BEST_CHECKPOINT
    best_saved = load_checkpoint(best_path) if best_path.is_file() else None
    if best_saved is not None and not _same_config(best_saved["config"], checkpoint["config"]):
        raise CheckpointError(f"{best_path} and {run_dir / CHECKPOINT} come from different runs (their settings "
                              "differ), so neither can repair the other; put back the run's own files, or start a "
                              "new run")
    best_epoch = best_saved["epoch"] if best_saved is not None else None
    if best is None or best_epoch == best["epoch"]:
        return repaired
    if best["epoch"] == epoch:
        save_checkpoint(best_checkpoint(checkpoint["config"], checkpoint["model_config"], checkpoint["model_state"],
                                        best, checkpoint["step"], checkpoint.get("structure_source")), best_path)
        repaired.append(f"{BEST_CHECKPOINT} rewritten from {CHECKPOINT} (epoch {epoch}, the best)")
    elif best_epoch is not None and best_epoch > epoch:
        aside = best_path.with_name(f"{BEST_CHECKPOINT}.unfinished-epoch-{best_epoch}")
        best_path.replace(aside)
        repaired.append(f"{BEST_CHECKPOINT} held epoch {best_epoch}, which {CHECKPOINT} (epoch {epoch}) never "
                        f"finished; moved to {aside.name}, and the best epoch ({best['epoch']}) is no longer kept")
    return repaired


def _same_config(a: dict, b: dict) -> bool:
    """Whether two checkpoints' configs are one run's: equal but for what a resumed run may change."""
    return all(a.get(key) == b.get(key) for key in set(a) | set(b) if key not in TrainConfig.RESUMABLE_CHANGES)


def _check_same_run(run_dir: Path, checkpoint: dict, metrics: Optional[str]) -> None:
    """Refuse to "repair" a run from a checkpoint that is not its own: a half-done write leaves ``metrics.jsonl`` a
    prefix of the checkpoint's history (an epoch behind) and ``config.json`` the checkpoint's settings; anything
    else (a ``checkpoint.pt`` copied in from another run, say) would overwrite the run's records with another's."""
    rows = []  # compared as JSON text, as they are written (a NaN equals itself there)
    for line in (metrics or "").splitlines():
        try:
            rows.append(json.dumps(json.loads(line)))
        except ValueError:
            break  # a last line cut short by the interruption
    history = [json.dumps(row) for row in checkpoint.get("history") or []]
    config_path = run_dir / CONFIG
    try:
        saved_config = json.loads(config_path.read_text()) if config_path.is_file() else None
    except (OSError, ValueError):
        saved_config = None
    if rows != history[:len(rows)] or (saved_config is not None and not _same_config(saved_config,
                                                                                      checkpoint["config"])):
        raise CheckpointError(f"{run_dir / CHECKPOINT} does not belong with this run's {METRICS} and {CONFIG} (its "
                              "history or settings differ, which no interrupted write leaves), so it cannot repair "
                              "them; put back the run's own checkpoint, or start a new run")


def _epochs_trained(run_dir: Path, default: int) -> int:
    """The last epoch in the run's metrics.jsonl (``default`` if it cannot be read)."""
    try:
        lines = (run_dir / METRICS).read_text().splitlines()
        return int(json.loads(lines[-1])["epoch"]) if lines else default
    except (OSError, ValueError, KeyError, TypeError):
        return default


def describe_checkpoint(checkpoint: dict) -> str:
    """E.g. "the best checkpoint (epoch 57 of 60, validation ELBO -95.10)"."""
    history = checkpoint.get("history") or []
    trained = history[-1]["epoch"] if history else checkpoint["epoch"]
    valid = checkpoint.get("valid_elbo", history[-1]["valid_elbo"] if history else None)
    of = f" of {checkpoint.get('epochs_trained', trained)}"
    elbo = f", validation ELBO {valid:.2f}" if valid is not None else ""
    bound = checkpoint.get("valid_bound", history[-1].get("valid_bound") if history else None)
    if bound is not None:
        name = selection_name("valid_bound", checkpoint["config"]["num_particles"])
        elbo += f", {name} {bound:.2f}"
    accuracy = checkpoint.get("valid_accuracy", history[-1].get("valid_accuracy") if history else None)
    if accuracy is not None:
        elbo += f", validation accuracy {100 * accuracy:.2f} %"
    return f"the {checkpoint['kind']} checkpoint (epoch {checkpoint['epoch']}{of}{elbo})"


def _setting(value) -> str:
    """A structure setting in words for a mismatch message."""
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return "(none)" if value is None else str(value)


def _shape(shape: Optional[tuple]) -> str:
    return "(absent)" if shape is None else "(" + ", ".join(str(n) for n in shape) + ")"


def _load_model_state(model: LatentStructure, checkpoint: dict, path: Path) -> None:
    try:
        model.load_state_dict(checkpoint["model_state"])
    except (RuntimeError, KeyError) as err:
        first_line = str(err).strip().splitlines()[0]
        raise CheckpointError(f"the checkpoint {path} does not match the model ({first_line})") from None
