-- A scored indicator is a share: its numerator is never negative and never above its
-- denominator (a count of a subset of what the denominator counts).
select i.unit_id, i.period, i.indicator, i.numerator, i.denominator
from {{ ref('mart_index_indicator') }} as i
inner join {{ ref('methodology') }} as m using (methodology, indicator)
where m.scored
  and (i.numerator < 0 or i.denominator < 0 or i.numerator > i.denominator)
