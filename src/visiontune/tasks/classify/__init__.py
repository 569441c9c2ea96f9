from .task import ClassifyTask

__all__ = ["ClassifyTask"]
