{{ config(materialized='table', tags=['index']) }}
-- One row per unit × period × indicator: the ratio and the points of SPEC §4 under the
-- methodology in force for the period. `chiso index score` runs this same file on counts
-- given in a CSV, so the warehouse and the command line cannot disagree.
--
-- points = min(max, max × ratio / target), ratio = numerator / denominator, except:
--   zero denominator: not_scored → ratio and points null (adds 0 to the group),
--                     zero → 0 points, full → max points;
--   applies_to = 'communes': not applicable to tax units → max points (ratio null);
--   applies_to = 'top': 0 points below the top of a unit tree (is_top = false);
--   scored = false (shown only): ratio shown, points null.

with

counts as (
    select * from {{ ref('int_indicator_counts') }}
),

methodology as (
    select * from {{ ref('methodology') }}
),

unit_periods as (
    select distinct unit_id, period, methodology from counts
),

-- Indicators that do not apply to tax units earn their maximum even when no count is given.
not_applicable as (
    select
        up.unit_id,
        up.period,
        m.indicator,
        cast(null as double) as numerator,
        cast(null as double) as denominator,
        cast(null as boolean) as is_top,
        up.methodology
    from unit_periods as up
    inner join methodology as m
        on m.methodology = up.methodology and m.applies_to = 'communes'
    anti join counts as c
        on c.unit_id = up.unit_id and c.period = up.period and c.indicator = m.indicator
),

all_counts as (
    select unit_id, period, indicator, numerator, denominator, is_top, methodology from counts
    union all
    select unit_id, period, indicator, numerator, denominator, is_top, methodology from not_applicable
),

with_rules as (
    select
        c.unit_id,
        c.period,
        c.indicator,
        c.numerator,
        c.denominator,
        c.is_top,
        c.methodology,
        m.group_code,
        m.max_points,
        m.target,
        m.zero_denominator,
        m.applies_to,
        m.scored,
        case
            when m.applies_to = 'communes' then null
            when c.denominator > 0 then c.numerator / c.denominator
        end as ratio
    from all_counts as c
    inner join methodology as m
        on m.methodology = c.methodology and m.indicator = c.indicator
),

scored as (
    select
        *,
        case
            when not scored then null
            when applies_to = 'communes' then max_points
            when applies_to = 'top' and is_top = false then 0.0
            when denominator > 0 then least(max_points, max_points * ratio / target)
            when zero_denominator = 'zero' then 0.0
            when zero_denominator = 'full' then max_points
        end as points
    from with_rules
)

select
    unit_id,
    period,
    indicator,
    group_code,
    numerator,
    denominator,
    ratio,
    points,
    max_points,
    methodology
from scored
