-- mart_index_indicator has one row per unit, period and indicator.
select unit_id, period, indicator, count(*) as rows
from {{ ref('mart_index_indicator') }}
group by all
having count(*) > 1
