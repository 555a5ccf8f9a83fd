"""Trained models as a folder of plain files, shipped in the package or shared through any file host.

An exported model (``pyro-vae export RUN DIR``) is a folder of:

* ``weights.safetensors``: the structure's weights (safetensors: no pickle, so loading runs no code);
* ``config.json``: the run's training config, the structure's constructor arguments, the epoch, the checkpoint
  kind and, for a structure from a file, that file's source;
* ``metrics.jsonl`` and the run's ``evaluation*.json``: what was measured;
* ``README.md``: a model card (structure, data, epochs, figures, the command that trained it);
* ``SHA256SUMS``: the SHA-256 of every other file, checked on every load.

``load("pretrained:NAME")`` (or a folder's path, or ``hf:OWNER/NAME[@REVISION]``: a model on the Hugging Face
Hub, fetched into its local cache by ``huggingface_hub``) rebuilds the structure and loads its weights;
``pyro-vae evaluate pretrained:NAME`` and ``pyro-vae sample pretrained:NAME`` take it like a run directory.
``pyro-vae export RUN DIR --push-to-hub OWNER/NAME`` uploads the folder it writes.
The models shipped with the package are in ``pyro_vae/pretrained_models/`` and listed by ``pyro-vae pretrained``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Optional

from safetensors.torch import load_file, save_file

from pyro_vae.errors import PyroVAEError
from pyro_vae.files import write_json, write_text
from pyro_vae.models import build_model
from pyro_vae.training import TrainConfig, load_trained_model

#: the folder of the models shipped with the package
PRETRAINED_DIR = Path(__file__).parent / "pretrained_models"
PREFIX = "pretrained:"
#: a model on the Hugging Face Hub: hf:OWNER/NAME, or hf:OWNER/NAME@REVISION (a branch, tag or commit)
HUB_PREFIX = "hf:"
HUB_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
HUB_INSTALL = "pip install huggingface_hub (or pip install -e '.[hub]')"
WEIGHTS, CONFIG, CARD, SUMS = "weights.safetensors", "config.json", "README.md", "SHA256SUMS"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_exported(spec: str) -> bool:
    """Whether ``spec`` names an exported model: ``pretrained:NAME``, ``hf:OWNER/NAME``, or a folder holding
    weights.safetensors."""
    return str(spec).startswith((PREFIX, HUB_PREFIX)) or (Path(spec) / WEIGHTS).is_file()


def model_name(spec: str) -> str:
    """A short name for what ``spec`` names: NAME of ``pretrained:NAME`` or ``hf:OWNER/NAME``, else the folder's."""
    spec = str(spec)
    if spec.startswith(HUB_PREFIX):
        return spec[len(HUB_PREFIX):].partition("@")[0].split("/")[-1]
    return spec[len(PREFIX):] if spec.startswith(PREFIX) else Path(spec).name


def hub_repo(repo: str, option: str) -> str:
    """``repo`` checked as a Hub repository id, OWNER/NAME, with one sentence if it is not one."""
    if not HUB_REPO.fullmatch(repo) or len(repo) > 96:
        raise PyroVAEError(f"{option} takes a Hugging Face Hub repository as OWNER/NAME (letters, digits, '.', '_', "
                           f"'-'), got {repo!r}")
    return repo


def _cause(err: Exception) -> str:
    """The first line of what an error says, or its type where it says nothing."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def require_hub():
    """The huggingface_hub package, with one sentence if it is not installed."""
    try:
        import huggingface_hub
    except ImportError:
        raise PyroVAEError(f"models on the Hugging Face Hub are read and written through the huggingface_hub "
                           f"package, which is not installed: {HUB_INSTALL}") from None
    return huggingface_hub


def _from_hub(spec: str) -> Path:
    """The local folder of ``hf:OWNER/NAME[@REVISION]``: huggingface_hub's snapshot of it, fetched when not cached
    (offline, with ``HF_HUB_OFFLINE=1``, the cache alone)."""
    repo, _, revision = spec[len(HUB_PREFIX):].partition("@")
    hub_repo(repo, HUB_PREFIX)
    hub = require_hub()
    try:
        folder = Path(hub.snapshot_download(repo_id=repo, revision=revision or None))
    except (OSError, ValueError) as err:  # network, not found, not cached offline (huggingface_hub's are OSErrors)
        raise PyroVAEError(f"could not fetch {spec} from the Hugging Face Hub: {_cause(err)}") from None
    if not (folder / WEIGHTS).is_file():
        raise PyroVAEError(f"{spec} holds no {WEIGHTS}: it is not a model written by pyro-vae export")
    return folder


def push_to_hub(folder: str | Path, repo: str, *, private: bool = False) -> str:
    """Upload an exported model's folder to the Hub repository ``repo`` (made if new); returns its address. Needs a
    token (``hf auth login`` or ``HF_TOKEN``)."""
    hub_repo(repo, "--push-to-hub")
    folder = Path(folder)
    check_sums(folder)
    api = require_hub().HfApi()
    try:
        api.create_repo(repo_id=repo, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo, repo_type="model", folder_path=str(folder),
                          commit_message=f"pyro-vae export of {folder.name}")
    except (OSError, ValueError) as err:
        raise PyroVAEError(f"could not upload {folder} to the Hugging Face Hub repository {repo}: {_cause(err)}; the "
                           f"folder is kept, upload it later with pyro_vae.pretrained.push_to_hub") from None
    return f"https://huggingface.co/{repo}"


def resolve(spec: str) -> Path:
    """The folder of ``pretrained:NAME``, of ``hf:OWNER/NAME[@REVISION]`` or of an exported model's path, with one
    sentence if there is none."""
    spec = str(spec)
    if spec.startswith(HUB_PREFIX):
        return _from_hub(spec)
    if spec.startswith(PREFIX):
        name = spec[len(PREFIX):]
        folder = PRETRAINED_DIR / name
        if not (folder / WEIGHTS).is_file():
            names = ", ".join(entry["name"] for entry in available()) or "none"
            raise PyroVAEError(f"no pretrained model {name!r}; the package has {names} (pyro-vae pretrained lists them)")
        return folder
    folder = Path(spec)
    if not (folder / WEIGHTS).is_file():
        raise PyroVAEError(f"{spec} holds no {WEIGHTS}: it is not an exported model (pyro-vae export RUN DIR makes one)")
    return folder


def check_export_folder(out_dir: Path) -> None:
    """One sentence if ``out_dir`` cannot take an export: it exists and is not an empty folder."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise PyroVAEError(f"{out_dir} already exists and is not an empty folder; choose a new one")


def export_run(run_dir: str | Path, out_dir: str | Path, *, which: str = "best", command: Optional[str] = None) -> Path:
    """Write the run's ``which`` checkpoint as an exported model in ``out_dir`` (new, or an empty folder)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    check_export_folder(out_dir)
    model, config, checkpoint = load_trained_model(run_dir, which=which)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS), metadata={"format": "pt"})
    (out_dir / WEIGHTS).chmod(0o644)  # safetensors writes 0600; a shared model is read by others
    history = _read_metrics(run_dir) or checkpoint.get("history") or []
    info = {"train_config": dataclasses.asdict(config), "model_config": checkpoint["model_config"],
            "structure_source": checkpoint.get("structure_source"), "epoch": checkpoint["epoch"],
            "kind": checkpoint["kind"], "epochs_trained": max((r.get("epoch", 0) for r in history), default=checkpoint["epoch"]),
            "valid_elbo": checkpoint.get("valid_elbo"), "command": command}
    write_json(info, out_dir / CONFIG)
    evaluations = sorted(run_dir.glob("evaluation*.json"))
    for source in [run_dir / "metrics.jsonl", *evaluations]:
        if source.is_file():
            shutil.copy(source, out_dir / source.name)
    write_text(out_dir / CARD, _card(out_dir.name, info, evaluations))
    files = sorted(p.name for p in out_dir.iterdir() if p.name != SUMS)
    write_text(out_dir / SUMS, "".join(f"{_sha256(out_dir / name)}  {name}\n" for name in files))
    return out_dir


def _read_metrics(run_dir: Path) -> list[dict]:
    """The run's per-epoch records: ``best.pt`` holds only the history up to its own epoch, so the card reads
    ``metrics.jsonl`` to say how many epochs the run reached."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _card(name: str, info: dict, evaluations: list[Path]) -> str:
    config = info["train_config"]
    lines = [f"# {name}", "",
             f"`{config['model']}` trained on `{config['dataset']}` ({config['likelihood']} pixels, "
             f"{config['net']} networks, z {info['model_config'].get('z_dim')}, hidden "
             f"{info['model_config'].get('hidden_dims')}) with `--elbo {config['elbo']}`; the {info['kind']} "
             f"checkpoint, epoch {info['epoch']} of {info['epochs_trained']}.", ""]
    if info.get("valid_elbo") is not None:
        lines.append(f"- validation ELBO {info['valid_elbo']:.2f} nats/image")
    for path in evaluations:
        result = json.loads(path.read_text())
        if "nll" in result:
            lines.append(f"- {result.get('split', 'test')} NLL {result['nll']:.2f} nats/image (K = "
                         f"{result.get('num_samples')}, {result.get('images')} images), ELBO {result['elbo']:.2f} "
                         f"({path.name})")
    if info.get("command"):
        lines += ["", "Trained by:", "", f"    {info['command']}"]
    lines += ["", "Load it with `pyro_vae.pretrained.load(PATH)`, or `pyro-vae evaluate PATH` / `pyro-vae sample PATH`."]
    return "\n".join(lines) + "\n"


def check_sums(folder: Path) -> None:
    """Refuse, in one sentence naming the file, an exported model whose files do not match SHA256SUMS."""
    sums = folder / SUMS
    if not sums.is_file():
        raise PyroVAEError(f"{folder} has no {SUMS}; export the model again")
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        path = folder / name
        if not path.is_file():
            raise PyroVAEError(f"{path} is missing, though {SUMS} lists it")
        if _sha256(path) != digest:
            raise PyroVAEError(f"{path} does not match its SHA-256 in {SUMS}: the file changed or was cut short")


def load(spec: str, device: str = "cpu"):
    """(structure, TrainConfig, info) of an exported model: ``pretrained:NAME`` or a folder's path; checksums first."""
    folder = resolve(spec)
    check_sums(folder)
    info = json.loads((folder / CONFIG).read_text())
    config = TrainConfig.from_dict(info["train_config"])
    model = build_model(config.model, structure_source=info.get("structure_source"), **info["model_config"])
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    info["folder"] = str(folder)
    return model.to(device).eval(), config, info


def available() -> list[dict]:
    """The models shipped in the package: name, size in MB, structure, data, and the figures of their card."""
    found = []
    for folder in sorted(PRETRAINED_DIR.glob("*")) if PRETRAINED_DIR.is_dir() else []:
        if not (folder / WEIGHTS).is_file():
            continue
        info = json.loads((folder / CONFIG).read_text())
        size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
        # the figure of the widest evaluation: the most images, then the most importance samples
        results = [json.loads(path.read_text()) for path in sorted(folder.glob("evaluation*.json"))]
        measured = [r for r in results if "nll" in r]
        best = max(measured, key=lambda r: (r.get("images", 0), r.get("num_samples", 0)), default=None)
        nll = None if best is None else best["nll"]
        found.append({"name": folder.name, "megabytes": round(size, 2), "model": info["train_config"]["model"],
                      "dataset": info["train_config"]["dataset"], "epoch": info["epoch"],
                      "valid_elbo": info.get("valid_elbo"), "test_nll": nll})
    return found
