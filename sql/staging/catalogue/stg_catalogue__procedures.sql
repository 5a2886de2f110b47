{{ config(materialized='table', tags=['staging']) }}
-- One row per procedure version (procedure_code, valid_from): the catalogue's history kept from
-- its snapshots (SCD type 2, as dim_units keeps the registry's), so that each period is counted
-- with the procedures as they were then.
--
-- Every snapshot landed is read; a procedure's consecutive snapshots with the same attributes
-- are one version. When a version starts: the first known version of a procedure always applied
-- (nothing older is known); a later version applies from its legal basis' effective date when
-- that is later than the version before (a changed procedure comes with a new legal basis),
-- else from the day its snapshot landed; a procedure new in a later snapshot applies from its
-- announcement (or its legal basis' effective date, or the landing). A procedure missing from a
-- later snapshot ends the day that snapshot landed. `is_current`: the latest version of a
-- procedure still in the catalogue.

with

source as (
    select * from {{ source('catalogue', 'procedures') }}
),

renamed as (
    select
        -- ids and names
        MaTTHC as procedure_code,
        TENTTHC as procedure_name,
        MaLinhVuc as field_code,
        LINHVUC as field_name,
        CAPTHUCHIEN as authority_level,

        -- online service
        case MucDoDVC
            when 'TOAN_TRINH' then 'full_online'
            when 'MOT_PHAN' then 'partly_online'
            when 'KHONG' then 'not_online'
        end as service_level,
        DuDieuKienToanTrinh = 1 as is_eligible_full_online,
        KetQuaLaGiay = 1 as is_result_paper,
        ThoiHanGiaiQuyet as statutory_working_days,

        -- fees and obligations
        CoNghiaVuTaiChinh = 1 as has_financial_obligation,
        PhiLePhi as fees_json,
        coalesce(json_array_length(PhiLePhi), 0) > 0 as is_fee_bearing,

        -- publication
        SoQuyetDinhCongBo as announcement_decision_no,
        NgayQuyetDinhCongBo as announced_on,
        NgayHieuLucCanCu as legal_basis_effective_on,
        NgayDangTaiCSDLQG as posted_on,
        SoThanhPhanBatBuocDayDu as mandatory_components_filled,
        SoThanhPhanBatBuocDayDu = 7 as has_all_mandatory_components,

        -- data connections
        KetNoiCSDLDanCu = 1 as is_population_data_connected,
        CoThanhPhanThayTheBangDuLieu = 1 as has_replaceable_components,

        _ingested_at as loaded_at,
        _run_id as run_id
    from source
),

-- One row per procedure per snapshot, present or not (a procedure left out of a snapshot has no
-- attributes there), with a digest of what the snapshot says of it.
runs as (
    select distinct run_id, loaded_at from renamed
),

digested as (
    select procedure_code, run_id, hash(*columns(* exclude (loaded_at, run_id))) as attributes
    from renamed
),

presence as (
    select
        c.procedure_code,
        r.run_id,
        r.loaded_at,
        x.attributes
    from (select distinct procedure_code from renamed) as c
    cross join runs as r
    left join digested as x on x.procedure_code = c.procedure_code and x.run_id = r.run_id
),

-- The snapshots where something changed for a procedure (it appeared, changed or left).
changes as (
    select *
    from (
        select
            *,
            lag(attributes) over (partition by procedure_code order by loaded_at, run_id) as previous_attributes,
            count(attributes) over (
                partition by procedure_code order by loaded_at, run_id rows between unbounded preceding and 1 preceding
            ) as versions_before
        from presence
    )
    where attributes is distinct from previous_attributes
      and (attributes is not null or previous_attributes is not null)
),

starts as (
    select
        ch.procedure_code,
        ch.run_id,
        ch.loaded_at,
        ch.attributes is null as is_removal,
        case
            when ch.attributes is null then cast(ch.loaded_at as date)
            when ch.versions_before = 0 and ch.loaded_at = (select min(loaded_at) from runs) then date '0001-01-01'
            when ch.versions_before = 0 then coalesce(least(x.announced_on, x.legal_basis_effective_on), cast(ch.loaded_at as date))
            else coalesce(x.legal_basis_effective_on, cast(ch.loaded_at as date))
        end as proposed_from,
        cast(ch.loaded_at as date) as landed_on
    from changes as ch
    left join renamed as x on x.procedure_code = ch.procedure_code and x.run_id = ch.run_id
),

-- Starts never go back in time: a change applies no earlier than the one before it (a version
-- whose start equals a later one's is replaced by it).
ordered as (
    select
        *,
        max(proposed_from) over (
            partition by procedure_code order by loaded_at, run_id rows unbounded preceding
        ) as valid_from
    from starts
),

versions as (
    select procedure_code, run_id, loaded_at, is_removal, valid_from
    from ordered
    qualify row_number() over (partition by procedure_code, valid_from order by loaded_at desc, run_id desc) = 1
),

bounded as (
    select *, lead(valid_from) over (partition by procedure_code order by valid_from) as valid_to
    from versions
)

select
    x.* exclude (run_id),
    v.valid_from,
    v.valid_to,
    v.valid_to is null as is_current
from bounded as v
inner join renamed as x on x.procedure_code = v.procedure_code and x.run_id = v.run_id
where not v.is_removal
