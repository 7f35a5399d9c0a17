"""The store in the SQL that SQLite and PostgreSQL both speak: one `SqlStore`, over a thin
`Driver` per database (`sqlite.py`, `postgres.py`).

Cut along the store's roles, each part a few hundred lines over the shared `base` (sessions,
the driver, the mapping of its errors to `StoreUnavailable`): `appkeys`, `subscriptions`,
`summaries` (and the counters they read), `log` (and recovery, and search), `feeds`
(polling subscriptions' feeds), `pipeline` (events,
deliveries, claims, leases, outcomes), `retention` and `personal` (erasure, the payload
retention, re-sealing), `operational` (operational events and the audit trail).
"""

from __future__ import annotations

from service.store.sql.appkeys import ApiKeysSql
from service.store.sql.feeds import FeedsSql
from service.store.sql.log import DeliveryLogSql
from service.store.sql.operational import OperationalSql
from service.store.sql.personal import PersonalDataSql
from service.store.sql.pipeline import PipelineSql
from service.store.sql.retention import RetentionSql
from service.store.sql.subscriptions import SubscriptionsSql
from service.store.sql.summaries import SummariesSql


class SqlStore(
    ApiKeysSql,
    SubscriptionsSql,
    SummariesSql,
    DeliveryLogSql,
    FeedsSql,
    PipelineSql,
    RetentionSql,
    PersonalDataSql,
    OperationalSql,
):
    """The store on either database, through its driver: `interfaces.Store`."""
