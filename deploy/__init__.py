"""Deployment files; `deploy.local` holds the Python tools of the local stack (not shipped)."""
