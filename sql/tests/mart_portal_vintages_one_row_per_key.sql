-- mart_portal_vintages has one row per portal unit, period, code and vintage, and every
-- vintage after the first changes something.
select department_id, period, code, vintage
from {{ ref('mart_portal_vintages') }}
group by all
having count(*) > 1
   or (vintage > 1 and bool_and(
        previous_numerator is not distinct from numerator
        and previous_denominator is not distinct from denominator
        and previous_score is not distinct from score
        and previous_data_quality_status is not distinct from data_quality_status))
