"""What an operator or an org does to its subscriptions beyond create, read, update and delete:
redeliver, replay, rotate a secret. Each operation is written once here, over the store, and the
management API and the command line both call it: they parse their input, call, and present the
result (or the error from `service.errors`) in their own form."""
