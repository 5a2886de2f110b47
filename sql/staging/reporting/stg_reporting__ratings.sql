{{ config(materialized='incremental', unique_key='dossier_id', tags=['staging'],
    pre_hook="{% if is_incremental() %}SET VARIABLE stg_reporting__ratings_since = (SELECT coalesce(max(loaded_at), TIMESTAMP '0001-01-01') FROM {{ this }}){% endif %}") }}
-- One row per rated dossier (dossier_id): the latest rating.
-- Incremental: records landed since the last build compete with the kept row of their key.

with

source as not materialized (
    select * from {{ source('reporting', 'ratings') }}
    {% if is_incremental() %}
    where _ingested_at > getvariable('stg_reporting__ratings_since')
    {% endif %}
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
    {% if is_incremental() %}
    union all by name
    select * from {{ this }} where dossier_id in (select MaHoSo from source)
    {% endif %}
),

latest as (
    select * from renamed
    qualify row_number() over (partition by dossier_id order by rated_at desc, loaded_at desc) = 1
)

select * from latest
