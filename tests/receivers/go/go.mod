module receivers

go 1.21.0

require github.com/standard-webhooks/standard-webhooks/libraries v1.3.0
