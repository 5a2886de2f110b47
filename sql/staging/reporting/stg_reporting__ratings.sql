{{ config(materialized='table', tags=['staging']) }}
-- One row per rated dossier (dossier_id): the latest rating.

with

source as (
    select * from {{ source('reporting', 'ratings') }}
),

renamed as (
    select
        MaHoSo as dossier_id,
        MaDonVi as unit_id,
        case MucDoHaiLong
            when '1' then 'very_satisfied'
            when '2' then 'satisfied'
            when '3' then 'unsatisfied'
        end as rating,
        CoKhieuNai = 1 as has_complaint,
        ThoiGianDanhGia as rated_at,
        _ingested_at as loaded_at
    from source
),

latest as (
    select * from renamed
    qualify row_number() over (partition by dossier_id order by rated_at desc, loaded_at desc) = 1
)

select * from latest
