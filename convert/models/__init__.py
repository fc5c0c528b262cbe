"""The model families the converter knows, one module each; importing them registers their parts
(``convert.base.ModelBase.register``).

* ``deepseek_ocr``  - DeepSeek-OCR v1 (``deepseek2-ocr`` text, ``clip``/``deepseekocr`` vision)
* ``deepseek_ocr2`` - DeepSeek-OCR-2 (the same text file, ``clip``/``deepseekocr2`` vision)
* ``paddleocr_vl``  - PaddleOCR-VL (``paddleocr`` text, ``clip``/``paddleocr`` vision)
* ``deepseek_vl2``  - DeepSeek-VL2 (``deepseek2-ocr`` / ``deepseek2`` text, ``clip``/``deepseekvl2`` vision)
* ``sam``           - SAM ViT-B, the vision stage both DeepSeek families share (not a family)
"""
from . import deepseek_ocr, deepseek_ocr2  # noqa: F401
from . import paddleocr_vl  # noqa: F401
from . import deepseek_vl2  # noqa: F401

__all__ = ["deepseek_ocr", "deepseek_ocr2", "paddleocr_vl", "deepseek_vl2"]
