-- Every methodology version can be scored as it is written, or the build fails naming what
-- cannot (a new group or indicator must never disappear without a word):
--   * every group is a column of mart_index_unit_period (the marts show the groups as columns);
--   * every indicator that applies to tax units is counted by int_indicator_counts (a new
--     indicator needs its counting rule there before a methodology can use it);
--   * each group's indicators add up to its group_max, and the groups to 100.
with

methodology as (
    select * from {{ ref('methodology') }}
),

-- read through ref(), so that a runner (chiso, dbt) builds the mart before this test
mart_columns as (
    select column_name
    from (describe select * from {{ ref('mart_index_unit_period') }})
),

counted as (
    select distinct indicator from {{ ref('int_indicator_counts') }}
),

groups as (
    select methodology, group_code, any_value(group_max) as group_max, sum(max_points) as indicator_max
    from methodology
    group by all
)

select methodology, group_code as item,
    'group ' || group_code || ' is not a column of mart_index_unit_period: add it there' as problem
from groups
where lower(group_code) not in (select column_name from mart_columns)
union all
select methodology, indicator,
    'indicator ' || indicator || ' is not counted by int_indicator_counts: add its rule there'
from methodology
where applies_to <> 'communes'
  and indicator not in (select indicator from counted)
  and exists (select 1 from counted)
union all
select methodology, group_code,
    'the indicators of group ' || group_code || ' add up to ' || indicator_max || ', not its group_max ' || group_max
from groups
where abs(indicator_max - group_max) > 1e-9
union all
select methodology, 'total', 'the groups add up to ' || sum(group_max) || ', not 100'
from groups
group by methodology
having abs(sum(group_max) - 100) > 1e-9
