"""What an operator or an org does beyond creating, reading, updating and deleting subscriptions:
redeliver, replay, rotate a secret, erase one customer's data. Each operation is written once
here, over the store, and the management API and the command line both call it: they parse their
input, call, and present the result (or the error from `service.errors`) in their own form."""
