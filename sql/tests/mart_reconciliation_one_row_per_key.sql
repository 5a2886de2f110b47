-- mart_reconciliation has one row per unit (portal department, or chiso unit where the portal
-- has none), period and code.
select coalesce(department_id, unit_id) as unit, period, code, count(*) as rows
from {{ ref('mart_reconciliation') }}
group by all
having count(*) > 1
