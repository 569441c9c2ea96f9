"""Model loading, roles, families, tiny models and composed VLMs.

Importing this package registers composed VLMs with the transformers Auto classes, so every loader below
(and plain `AutoModelForImageTextToText.from_pretrained` after `import visiontune.models`) can open them.
"""

from .compose.registration import register_composed_vlm

register_composed_vlm()
