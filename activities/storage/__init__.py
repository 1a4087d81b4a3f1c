"""Object storage (S3, or the local emulator through AWS_ENDPOINT_URL): backups and their
manifests, listed, downloaded with checksums and uploaded as streams."""
