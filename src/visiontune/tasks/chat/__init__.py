from .task import ChatTask

__all__ = ["ChatTask"]
