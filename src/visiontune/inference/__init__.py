"""Running a loaded model: `Predictor` batches images through generation; tasks build their answers on it."""
