from .task import CaptionTask

__all__ = ["CaptionTask"]
