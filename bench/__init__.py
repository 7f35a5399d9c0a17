"""The performance harness (`make bench`, `python -m bench [--quick]`).

Never collected by pytest: no module here is named `test_*`, and nothing here is a test. The
service runs as a child process (`python -m service serve`) against the real local Kafka and a
fresh SQLite file or PostgreSQL database per run; an open-model load generator produces catalog
events on a fixed schedule; a receiver in a process of its own answers 204 and notes every
arrival. bench/README.md says what each scenario measures.
"""
