{{ config(materialized='table', tags=['staging']) }}
-- One row per unit × month (unit_id, period): dossiers received according to the national
-- reporting system. Each report snapshot may carry some months only (the report of a month is
-- published after it ends, and a later one may correct it): every unit and month reported in
-- any snapshot is kept, from the newest snapshot that reported it (latest NgayBaoCao, then
-- landing). Only monthly periods (YYYY-MM) are counted; a report of another period is listed by
-- the warning test national_report_periods_not_monthly.

with

source as (
    select * from {{ source('national_report', 'received') }}
),

renamed as (
    select
        MaDonVi as unit_id,
        KyBaoCao as period,
        SoHoSoTiepNhan as received_count,
        NgayBaoCao as reported_on,
        _ingested_at as loaded_at,
        _run_id as run_id
    from source
),

latest as (
    select * from renamed
    qualify row_number() over (
        partition by unit_id, period order by reported_on desc nulls last, loaded_at desc, run_id desc
    ) = 1
)

select unit_id, period, received_count, reported_on, loaded_at
from latest
where regexp_full_match(period, '[0-9]{4}-(0[1-9]|1[0-2])')
