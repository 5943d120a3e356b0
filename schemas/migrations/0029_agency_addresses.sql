-- Agencies' postal addresses and the daily pull slips (issue 19 item 7; owned by broker/,
-- which owns agency). `agency_address` is written by broker/agency_addresses.py through
-- `run.py agency address set` and read by broker/pull_slips.py: the supplier's address
-- is the sender on a shipping label, the requester's the recipient when its request gave
-- no requestedDeliveryInfo physicalAddress. Chinese is the normal case (上海市徐汇区...).
-- broker/agency_addresses.py checks the shapes with clear messages; the CHECKs below
-- are the backstop for rows written by anything else.
CREATE TABLE agency_address (
    symbol      text PRIMARY KEY REFERENCES agency (symbol) ON UPDATE CASCADE
                ON DELETE CASCADE,
    -- who at the agency takes the parcel: a department, a person (馆际互借部 王老师)
    recipient   text CHECK (recipient <> ''),
    line1       text NOT NULL CHECK (line1 <> ''),
    line2       text CHECK (line2 <> ''),
    city        text NOT NULL CHECK (city <> ''),
    province    text NOT NULL CHECK (province <> ''),
    postcode    text NOT NULL,
    -- ISO 3166-1 alpha-2
    country     text NOT NULL DEFAULT 'CN' CHECK (country ~ '^[A-Z]{2}$'),
    -- couriers in China will not take a parcel without the recipient's phone
    -- (the shape: broker/agency_addresses.py `check_phone`; here only its start and length)
    phone       text NOT NULL CHECK (phone ~ '^\+?[0-9(]' AND length(phone) <= 40),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE agency_address ADD CONSTRAINT agency_address_cn_postcode
    CHECK (country <> 'CN' OR postcode ~ '^[0-9]{6}$');

-- The pull slips mailed to each supplier, once per supplier and consortium-local day:
-- the primary key is the claim (broker/pull_slips.py `send_pull_slips`), taken in the
-- transaction that queues the mail, so two hub processes never mail the same day twice.
CREATE TABLE pull_slip_mail (
    supplier  text NOT NULL REFERENCES agency (symbol) ON UPDATE CASCADE ON DELETE CASCADE,
    day       date NOT NULL,
    loans     integer NOT NULL CHECK (loans > 0),
    file      text NOT NULL,           -- <data_dir>/pull-slips/<day>/<symbol>.pdf
    mail_id   bigint,
    made_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (supplier, day)
);
