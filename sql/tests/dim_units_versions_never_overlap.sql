-- The versions of one unit never overlap and never end before they begin: on any day at most one
-- version of a unit is valid, so a period's tree (the versions valid on its last day) has each
-- unit once, with one parent, and the roll-up counts its records once.
with

versions as (
    select
        unit_id,
        valid_from,
        valid_to,
        lead(valid_from) over (partition by unit_id order by valid_from, valid_to nulls last) as next_valid_from
    from {{ ref('dim_units') }}
)

select unit_id, valid_from, valid_to, next_valid_from,
    case
        when valid_to < valid_from then 'ends before it begins'
        when valid_to is null then 'open while a later version begins'
        else 'overlaps the next version'
    end as problem
from versions
where valid_to < valid_from
   or (next_valid_from is not null and (valid_to is null or valid_to >= next_valid_from))
