{{ config(materialized='table', tags=['dims']) }}
-- One row per unit version (SCD type 2): validity dates, parent, level, successors, and whether
-- the version is current. A period uses the versions valid at its end.

with

units as (
    select * from {{ ref('stg_registry__units') }}
)

select
    unit_id,
    valid_from,
    valid_to,
    unit_name,
    parent_unit_id,
    unit_level,
    unit_kind,
    successor_unit_ids,
    portal_department_id,
    parent_unit_id is null as is_top_level,
    valid_to is null as is_current
from units
