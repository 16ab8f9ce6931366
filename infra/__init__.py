"""The outside world: settings, storage URLs (local path or s3://), services."""
