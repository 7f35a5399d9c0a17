"""`python -m service` is the same as the `identity-webhooks` command."""

from service.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
