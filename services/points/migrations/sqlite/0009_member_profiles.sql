-- Member profiles: enrolment, birthday (month and day, no year), locale,
-- time zone, marketing consents and the shop's attributes. The body is the
-- profile as JSON; the birthday and time zone are columns too, for the
-- birthday job to find who is due.
CREATE TABLE member_profiles (
    program_id      TEXT    NOT NULL,
    customer_id     TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    birth_month     INTEGER NOT NULL DEFAULT 0,
    birth_day       INTEGER NOT NULL DEFAULT 0,
    time_zone       TEXT    NOT NULL DEFAULT '',
    version         INTEGER  NOT NULL,
    updated_at_us   INTEGER  NOT NULL,
    PRIMARY KEY (program_id, customer_id)
);
CREATE INDEX member_profiles_by_birthday ON member_profiles (birth_month, birth_day) WHERE birth_month > 0;
