{{ config(materialized='table', tags=['staging']) }}
-- One row per special day (public holiday or compensatory working day) from the latest
-- calendar snapshot. Ordinary weekdays and weekends are not listed; dim_calendar fills them in.

with

source as (
    select * from {{ source('calendar', 'days') }}
),

latest_snapshot as (
    select * from source
    where _run_id = (select max(_run_id) from source)
),

renamed as (
    select
        Ngay as calendar_date,
        case LoaiNgay
            when 'NGAY_NGHI' then 'holiday'
            when 'NGAY_LAM_BU' then 'compensatory_workday'
        end as day_kind,
        TenNgay as day_name,
        _ingested_at as loaded_at
    from latest_snapshot
)

select * from renamed
