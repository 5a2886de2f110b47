{{ config(severity='warn') }}
-- Dossiers (current version) and petitions carrying a time before 2000 or from 2050 on (vars
-- earliest_real_time and latest_real_time in dbt_project.yml): a
-- placeholder (a `99991231…` sentinel, a zeroed date) rather than a date. The record is kept
-- and counted as it came: a dossier received at such a time falls in no period, one due then is
-- never late before it, and the calendar (dim_calendar) is not stretched to reach it. A
-- warning: the source's record needs correcting; the rest of the warehouse is right.
with

dossier_times as (
    select dossier_id, unit_id, lake_file, lake_row, unnest([
        struct_pack(field := 'NgayNopHoSo', t := submitted_at),
        struct_pack(field := 'NgayTiepNhan', t := received_at),
        struct_pack(field := 'NgayHenTra', t := due_at),
        struct_pack(field := 'NgayKetThucXuLy', t := processed_at),
        struct_pack(field := 'NgayTra', t := returned_at),
        struct_pack(field := 'NgayTuChoi', t := refused_at),
        struct_pack(field := 'ThoiDiemDongBo', t := synced_at)
    ]) as x
    from {{ ref('stg_portal__dossiers') }}
    -- only the versions with such a time are unnested
    where least(submitted_at, received_at, due_at, processed_at, returned_at, refused_at, synced_at) < timestamp '{{ var('earliest_real_time') }}'
       or greatest(submitted_at, received_at, due_at, processed_at, returned_at, refused_at, synced_at) >= timestamp '{{ var('latest_real_time') }}'
)

select 'dossier' as record, dossier_id as record_id, unit_id, x.field, x.t as time, lake_file, lake_row
from dossier_times
where x.t < timestamp '{{ var('earliest_real_time') }}' or x.t >= timestamp '{{ var('latest_real_time') }}'
union all
select 'petition', petition_id, unit_id, 'NgayTiepNhan', first_received_at, null, null
from {{ ref('stg_reporting__petitions') }}
where first_received_at < timestamp '{{ var('earliest_real_time') }}' or first_received_at >= timestamp '{{ var('latest_real_time') }}'
