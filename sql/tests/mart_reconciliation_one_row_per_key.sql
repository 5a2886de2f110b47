-- mart_reconciliation has one row per unit (chiso's, or the portal's department where chiso
-- has none), period and code.
select coalesce(unit_id, department_id) as unit, period, code, count(*) as rows
from {{ ref('mart_reconciliation') }}
group by all
having count(*) > 1
