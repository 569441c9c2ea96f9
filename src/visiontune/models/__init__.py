"""Model loading, roles, families, tiny models and composed VLMs.

Importing this package registers composed VLMs with the transformers Auto classes, so every loader below
(and plain `AutoModelForImageTextToText.from_pretrained` after `import visiontune.models`) can open them.
Where torch is not installed (the torch-free runtime's environment) only the run records (`run_base`) are
read from here, and there is nothing to register with.
"""

from importlib.util import find_spec

from .compose.registration import register_composed_vlm

if find_spec("torch") is not None:
    register_composed_vlm()
