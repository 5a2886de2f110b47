-- mart_index_unit_period has one row per unit and period (BI tools and publication join on it).
select unit_id, period, count(*) as rows
from {{ ref('mart_index_unit_period') }}
group by all
having count(*) > 1
