"""Compatibility only: the names this module held before the converter was split into ``convert.base``
(the shared machinery) and one module per model family in ``convert/models/``. Import from there."""
from .base import FORMAT_VERSION, KEY_FORMAT_VERSION, KV, ModelPlan, TensorPlan, tname  # noqa: F401
from .models.deepseek_ocr import (ARCHITECTURES_HF, ARCHITECTURES_ORIGINAL, DeepseekOcrTextModel,  # noqa: F401
                                  DeepseekOcrVisionModel)

ARCHITECTURES = {a: (DeepseekOcrTextModel, DeepseekOcrVisionModel) for a in ARCHITECTURES_ORIGINAL + ARCHITECTURES_HF}
