{{ config(materialized='view', tags=['staging']) }}
-- One row per landed processing-step record (a step landed twice appears twice), on the narrow
-- columns fct_dossiers summarises: the dossier, when and to which status, when it landed, and
-- the lake's step month (filters on it prune the lake's files). A view over the lake: the tens
-- of millions of steps are never copied into the warehouse, and fct_dossiers' minimums and
-- maximums are not changed by a repeated record. Drill-downs read stg_portal__dossier_steps
-- (each step once, with the officer).

with

source as (
    select * from {{ source('portal', 'dossier_steps') }}
)

select
    MaHoSo as dossier_id,
    ThoiDiemXuLy as stepped_at,
    TrangThai as status_code,
    _ingested_at as loaded_at,
    step_month
from source
