"""System checks for the MEDIASTREAM settings."""
