{{ config(materialized='table', tags=['staging']) }}
-- One row per unit version (unit_id, valid_from) from the latest registry snapshot.

with

source as (
    select * from {{ source('registry', 'units') }}
),

latest_snapshot as (
    select * from source
    where _run_id = (select max(_run_id) from source)
),

renamed as (
    select
        MaDonVi as unit_id,
        TenDonVi as unit_name,
        MaDonViCha as parent_unit_id,
        CapDonVi as unit_level,
        LoaiDonVi as unit_kind,
        HieuLucTu as valid_from,
        HieuLucDen as valid_to,
        coalesce(from_json(MaDonViKeThua, '["VARCHAR"]'), []::varchar[]) as successor_unit_ids,
        -- Read through the row's JSON: a lake whose snapshots predate the column has none (and
        -- a field the job did not list yet landed in `_extra`).
        coalesce(
            to_json(latest_snapshot) ->> 'MaDonViDVCQG',
            try_cast(_extra as json) ->> 'MaDonViDVCQG'
        ) as portal_department_id,
        _ingested_at as loaded_at
    from latest_snapshot
)

select * from renamed
