{{ config(materialized='table', tags=['staging']) }}
-- One row per unit × month: dossiers received according to the national reporting system,
-- from the latest report snapshot.

with

source as (
    select * from {{ source('national_report', 'received') }}
),

latest_snapshot as (
    select * from source
    where _run_id = (select max(_run_id) from source)
),

renamed as (
    select
        MaDonVi as unit_id,
        KyBaoCao as period,
        SoHoSoTiepNhan as received_count,
        NgayBaoCao as reported_on,
        _ingested_at as loaded_at
    from latest_snapshot
)

select * from renamed
