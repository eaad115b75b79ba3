"""Helpers of the test suite: models, data, a real TensorBoard, the dashboard page in Chromium."""
