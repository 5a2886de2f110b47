{{ config(materialized='incremental', unique_key='dossier_id', tags=['staging'],
    pre_hook="{% if is_incremental() %}SET VARIABLE stg_portal__dossiers_since = (SELECT max(loaded_at) FROM {{ this }}){% endif %}") }}
-- One row per dossier (dossier_id): its current version.
--
-- The portal re-sends a dossier on every change, late and out of order: a version synced late
-- can arrive (ThoiDiemDongBo) after a newer one, so arrival order alone would make statuses go
-- backwards. Versions are ordered by the state they describe: the latest of their own event
-- times (submitted, received, supplement asked and answered, processed, returned, refused),
-- then whether the online payment had been made, then the status's place in the workflow,
-- and only then by arrival.
--
-- The winner is chosen on narrow columns (dossier, ordering key, lake file (its hash) and row),
-- and only the winners' full rows are read and decoded. Incremental: only versions landed since the
-- last build are read; they compete with the current winner of their dossier, and a dossier
-- whose current version did not change is left as it is. `lake_file` and `lake_row` name the
-- record behind each row.

with

source as not materialized (
    select * from {{ source('portal', 'dossiers') }}
    {% if is_incremental() %}
    -- Landing is ordered (one writer per dataset), so everything below the newest loaded_at
    -- already kept was seen by an earlier build; equal stamps are read again (idempotent).
    where _ingested_at >= getvariable('stg_portal__dossiers_since')
    {% endif %}
),

-- The ordering key of each version, on narrow columns. NULLs sort lowest, as NULLS LAST does
-- in a descending order.
versions as (
    select
        MaHoSo as dossier_id,
        filename as lake_file,
        file_row_number as lake_row,
        coalesce(greatest(
            NgayNopHoSo,
            NgayTiepNhan,
            NgayKetThucXuLy,
            NgayTra,
            NgayTuChoi,
            case when DanhSachHoSoBoSung is not null and DanhSachHoSoBoSung <> '[]' then strptime(
                nullif(list_max(list_transform(
                    from_json(DanhSachHoSoBoSung, '[{"NgayBoSung":"VARCHAR","NgayTiepNhanBoSung":"VARCHAR"}]'),
                    lambda s: greatest(s.NgayBoSung, coalesce(s.NgayTiepNhanBoSung, s.NgayBoSung))
                )), ''),
                '%Y%m%d%H%M%S'
            ) end
        ), timestamp '0001-01-01') as state_at,
        coalesce(DuocThanhToanTrucTuyen = 1, false) as is_paid_online,
        case TrangThaiHoSo
            when '1' then 1
            when '2' then 2
            when '4' then 3
            when '5' then 4
            when '6' then 5
            when '10' then 7
            else 6
        end as workflow_rank,
        coalesce(ThoiDiemDongBo, timestamp '0001-01-01') as synced_at,
        _ingested_at as loaded_at
    from source
),

candidates as (
    select * from versions
    {% if is_incremental() %}
    union all by name
    select
        t.dossier_id,
        t.lake_file,
        t.lake_row,
        t.state_at,
        coalesce(t.is_paid_online, false) as is_paid_online,
        t.workflow_rank,
        coalesce(t.synced_at, timestamp '0001-01-01') as synced_at,
        t.loaded_at
    from {{ this }} as t
    where t.dossier_id in (select dossier_id from versions)
    {% endif %}
),

winners as (
    select
        dossier_id,
        arg_max(
            struct_pack(file_hash := hash(lake_file), lake_row := lake_row, state_at := state_at, workflow_rank := workflow_rank),
            struct_pack(s := state_at, p := is_paid_online, w := workflow_rank, t := synced_at, l := loaded_at)
        ) as w
    from candidates
    group by dossier_id
),

-- Full rows of the winners that are new versions (a kept current version is not re-read).
chosen as (
    select s.*, w.w.state_at, w.w.workflow_rank
    from source as s
    inner join winners as w
        on w.w.file_hash = hash(s.filename) and w.w.lake_row = s.file_row_number
),

renamed as (
    select
        -- ids
        MaHoSo as dossier_id,
        MaTTHC as procedure_code,
        TenTTHC as procedure_name,
        MaLinhVuc as field_code,
        DonViXuLy as unit_id,

        -- applicant (personal: never published)
        ChuHoSo as owner_name,
        SoGiayToChuHoSo as owner_id_number,
        case LoaiDoiTuong
            when '1' then 'citizen'
            when '2' then 'business'
            when '3' then 'state_agency'
            else 'other'
        end as applicant_type,

        -- channel and status
        case KenhThucHien
            when '1' then 'in_person'
            when '2' then 'online'
            when '3' then 'postal'
        end as channel,
        TrangThaiHoSo as status_code,
        case TrangThaiHoSo
            when '1' then 'registered'
            when '2' then 'received'
            when '3' then 'not_accepted'
            when '4' then 'processing'
            when '5' then 'supplement_requested'
            when '6' then 'financial_obligation_requested'
            when '7' then 'withdrawn'
            when '8' then 'processing_stopped'
            when '9' then 'processed'
            when '10' then 'result_returned'
        end as status,

        -- times (Vietnamese wall clock)
        NgayNopHoSo as submitted_at,
        NgayTiepNhan as received_at,
        NgayHenTra as due_at,
        NgayKetThucXuLy as processed_at,
        NgayTra as returned_at,
        NgayTuChoi as refused_at,
        ThoiDiemDongBo as synced_at,

        -- flags and lists (JSON text)
        HoSoCoThanhPhanSoHoa = 1 as is_digitised,
        DuocThanhToanTrucTuyen = 1 as is_paid_online,
        TaiLieuNop as components_json,
        DanhSachLePhi as fees_json,
        DanhSachHoSoBoSung as supplements_json,
        DanhSachGiayToKetQua as results_json,
        DSKetNoiCSDL as national_db_links_json,

        -- ordering and lineage
        state_at,
        workflow_rank,
        filename as lake_file,
        file_row_number as lake_row,
        _ingested_at as loaded_at
    from chosen
)

select * from renamed
