from .base import Task, get_task

__all__ = ["Task", "get_task"]
