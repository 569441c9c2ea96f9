from .task import DetectTask

__all__ = ["DetectTask"]
