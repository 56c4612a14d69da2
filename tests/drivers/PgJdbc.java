// Driver battery: pgjdbc (Debian's libpostgresql-jdbc-java). Compiled by tests/drivers.rs
// into target/drivers/java. Connection from DRV_HOST, DRV_PORT, DRV_DB, DRV_USER,
// DRV_PASSWORD. prepareThreshold is pgjdbc's default (5): a PreparedStatement becomes a named
// server-side statement from its 5th execution.
import java.io.StringReader;
import java.io.StringWriter;
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;

public class PgJdbc {
    static final String HOST = env("DRV_HOST", "127.0.0.1"), PORT = env("DRV_PORT", "55432"),
        DB = env("DRV_DB", "appdb"), USER = env("DRV_USER", "postgres"), PASSWORD = env("DRV_PASSWORD", "postgres");
    static final String SESSION_TIMEOUT = "1234ms";
    static final int MANY_CLIENTS = 40;
    static final String T = "drv_pgjdbc_" + ProcessHandle.current().pid() + "_" + new Random().nextInt(1_000_000);
    // `direct` (the primary itself) or through lsnpool: `tx`, `session`, `auto`.
    static final String MODE = env("DRV_MODE", "direct");
    // commit_token: commits made, each read back through its token on a fresh connection
    static final int TOKEN_ROUNDS = 5, TOKEN_ROW = 9000;
    static final String COMMIT_LSN = "lsnpool.commit_lsn";
    static int failed = 0;
    static final ExecutorService POOL = Executors.newCachedThreadPool(r -> { Thread t = new Thread(r); t.setDaemon(true); return t; });

    static String env(String k, String d) { String v = System.getenv(k); return v == null || v.isEmpty() ? d : v; }

    static class Failed extends Exception { Failed(String m) { super(m); } }
    static void expect(boolean c, String what) throws Failed { if (!c) throw new Failed(what); }

    interface Check { void run() throws Exception; }

    static Connection connect(String password) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", USER);
        p.setProperty("password", password);
        p.setProperty("connectTimeout", "15");
        p.setProperty("loginTimeout", "15");
        p.setProperty("socketTimeout", "20");
        return DriverManager.getConnection("jdbc:postgresql://" + HOST + ":" + PORT + "/" + DB, p);
    }
    static Connection connect() throws SQLException { return connect(PASSWORD); }

    /** An LSN as PostgreSQL writes it ('16/B374D848'); Failed on anything else. */
    static long parseLsn(String v) throws Failed {
        if (v == null || !v.matches("[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")) throw new Failed(COMMIT_LSN + " = " + v + " is not an LSN");
        String[] p = v.split("/");
        return (Long.parseLong(p[0], 16) << 32) | Long.parseLong(p[1], 16);
    }

    static Object one(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) { rs.next(); return rs.getObject(1); }
    }

    static void run(String name, long timeoutMs, Check check) {
        long t0 = System.nanoTime();
        Future<?> f = POOL.submit(() -> { check.run(); return null; });
        String err = null;
        try {
            f.get(timeoutMs, TimeUnit.MILLISECONDS);
        } catch (TimeoutException e) {
            f.cancel(true);
            err = "timed out after " + (timeoutMs / 1000) + "s (hang)";
        } catch (ExecutionException e) {
            Throwable c = e.getCause();
            err = c instanceof Failed ? c.getMessage() : c.getClass().getSimpleName() + ": " + c.getMessage();
        } catch (InterruptedException e) {
            err = "interrupted";
        }
        if (err == null) System.out.println("ok " + name);
        else {
            failed++;
            err = err.replaceAll("\\s+", " ");
            System.out.println("FAIL " + name + ": " + (err.length() > 300 ? err.substring(0, 300) : err));
        }
        System.out.flush();
        System.err.printf("[pgjdbc] %s %.2fs%n", name, (System.nanoTime() - t0) / 1e9);
    }
    static void run(String name, Check check) { run(name, 10_000, check); }

    static Connection sessionA;

    public static void main(String[] args) {
        run("login", () -> {
            try (Connection c = connect()) { expect(USER.equals(one(c, "SELECT current_user")), "current_user"); }
            try (Connection c = connect(PASSWORD + "x")) {
                throw new Failed("a wrong password was accepted");
            } catch (SQLException e) {
                expect("28P01".equals(e.getSQLState()), "wrong password: unexpected error " + e.getSQLState() + " " + e.getMessage());
            }
        });
        run("setup", () -> {
            try (Connection c = connect(); Statement s = c.createStatement()) {
                s.execute("DROP TABLE IF EXISTS " + T);
                s.execute("CREATE TABLE " + T + " (id int PRIMARY KEY, v text)");
            }
        });
        run("simple_query", () -> {
            try (Connection c = connect(); Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT 1, 'a'::text")) {
                expect(rs.next() && rs.getInt(1) == 1 && "a".equals(rs.getString(2)), "row");
            }
        });
        run("param_query", () -> {
            try (Connection c = connect(); PreparedStatement ps = c.prepareStatement("SELECT ?::int + ?::int, ?::text")) {
                ps.setInt(1, 40); ps.setInt(2, 2); ps.setString(3, "x'y");
                try (ResultSet rs = ps.executeQuery()) { expect(rs.next() && rs.getInt(1) == 42 && "x'y".equals(rs.getString(2)), "result"); }
            }
        });
        run("prepared", () -> {
            try (Connection c = connect()) {
                for (int round = 0; round < 2; round++) {   // round 2: pgjdbc's statement cache
                    try (PreparedStatement ps = c.prepareStatement("SELECT ?::int * 2, ?::text")) {
                        for (int i = 0; i < 12; i++) {
                            ps.setInt(1, i); ps.setString(2, String.valueOf(i));
                            try (ResultSet rs = ps.executeQuery()) {
                                expect(rs.next() && rs.getInt(1) == i * 2 && String.valueOf(i).equals(rs.getString(2)), "round " + round + " execution " + i);
                            }
                        }
                    }
                }
            }
        });
        run("txn_recovery", () -> {
            try (Connection c = connect(); Statement s = c.createStatement()) {
                s.execute("INSERT INTO " + T + " VALUES (1, 'kept')");
                c.setAutoCommit(false);
                s.execute("INSERT INTO " + T + " VALUES (2, 'rolled back')");
                try {
                    s.executeQuery("SELECT 1/0");
                    throw new Failed("division by zero did not fail");
                } catch (SQLException e) {
                    expect("22012".equals(e.getSQLState()), "unexpected error " + e.getSQLState() + " " + e.getMessage());
                }
                c.rollback();
                Object n = one(c, "SELECT count(*) FROM " + T);
                expect(((Number) n).intValue() == 1, "count after rollback = " + n);
                c.commit();
            }
        });
        run("copy_in", () -> {
            try (Connection c = connect()) {
                StringBuilder sb = new StringBuilder();
                for (int i = 100; i < 200; i++) sb.append(i).append("\trow").append(i).append('\n');
                long n = c.unwrap(PGConnection.class).getCopyAPI().copyIn("COPY " + T + " (id, v) FROM STDIN", new StringReader(sb.toString()));
                expect(n == 100, "copyIn returned " + n);
                Object m = one(c, "SELECT count(*) FROM " + T + " WHERE id >= 100");
                expect(((Number) m).intValue() == 100, "copied rows = " + m);
            }
        });
        run("copy_out", () -> {
            try (Connection c = connect()) {
                StringWriter w = new StringWriter();
                c.unwrap(PGConnection.class).getCopyAPI().copyOut("COPY (SELECT g, 'row' || g FROM generate_series(100, 199) g) TO STDOUT", w);
                String[] lines = w.toString().split("\n");
                expect(lines.length == 100 && lines[0].equals("100\trow100"), lines.length + " lines, first " + lines[0]);
            }
        });
        run("cancel", () -> {
            try (Connection c = connect(); Statement s = c.createStatement()) {
                long t0 = System.nanoTime();
                ScheduledExecutorService ses = Executors.newSingleThreadScheduledExecutor();
                ses.schedule(() -> { try { s.cancel(); } catch (SQLException e) { /* reported by the query */ } }, 500, TimeUnit.MILLISECONDS);
                try {
                    s.execute("SELECT pg_sleep(5)");
                    throw new Failed("pg_sleep(5) was not cancelled");
                } catch (SQLException e) {
                    expect("57014".equals(e.getSQLState()), "expected 57014, got " + e.getSQLState() + " " + e.getMessage());
                } finally {
                    ses.shutdown();
                }
                double took = (System.nanoTime() - t0) / 1e9;
                expect(took < 2.5, String.format("cancel took %.2fs", took));
                expect(((Number) one(c, "SELECT 7")).intValue() == 7, "query after cancel");
            }
        });
        run("notice", () -> {
            try (Connection c = connect(); Statement s = c.createStatement()) {
                s.execute("DO $$ BEGIN RAISE NOTICE 'hi'; END $$");
                SQLWarning w = s.getWarnings();
                expect(w != null && "hi".equals(w.getMessage()), "warnings " + w);
            }
        });
        run("listen_notify", () -> {
            String ch = T + "_ch";
            try (Connection l = connect(); Connection n = connect()) {
                try (Statement s = l.createStatement()) { s.execute("LISTEN " + ch); }
                try (Statement s = n.createStatement()) { s.execute("NOTIFY " + ch + ", 'payload'"); }
                PGNotification[] got = l.unwrap(PGConnection.class).getNotifications(2000);
                expect(got != null && got.length == 1 && "payload".equals(got[0].getParameter()), "notifications within 2s: " + (got == null ? "none" : got.length));
            }
        });
        run("session_set_sticks", () -> {
            Connection a = connect();
            sessionA = a;
            try (Statement s = a.createStatement()) {
                s.execute("SET statement_timeout = '" + SESSION_TIMEOUT + "'");
                s.execute("SET application_name = 'drv_sticky'");
            }
            a.setAutoCommit(false);
            for (int i = 0; i < 3; i++) {
                Object st = one(a, "SHOW statement_timeout"), an = one(a, "SHOW application_name");
                a.commit();
                expect(SESSION_TIMEOUT.equals(st) && "drv_sticky".equals(an), "transaction " + i + ": " + st + ", " + an);
            }
        });
        run("session_set_isolated", () -> {
            try {
                for (int i = 0; i < 5; i++) {
                    try (Connection c = connect()) {
                        c.setAutoCommit(false);   // a read-write transaction: on the primary
                        Object st = one(c, "SHOW statement_timeout"), an = one(c, "SHOW application_name");
                        c.commit();
                        expect(!SESSION_TIMEOUT.equals(st) && !"drv_sticky".equals(an),
                            "connection " + i + " sees another session's settings: statement_timeout=" + st + " application_name=" + an);
                    }
                }
            } finally {
                if (sessionA != null) { try { sessionA.close(); } catch (SQLException e) { } sessionA = null; }
            }
        });
        run("many_clients", 30_000, () -> {
            List<Future<?>> fs = new ArrayList<>();
            for (int i = 0; i < MANY_CLIENTS; i++) {
                final int id = i;
                fs.add(POOL.submit(() -> {
                    try (Connection c = connect(); PreparedStatement ps = c.prepareStatement("SELECT ?::int + ?::int")) {
                        for (int j = 0; j < 3; j++) {
                            ps.setInt(1, id); ps.setInt(2, j);
                            try (ResultSet rs = ps.executeQuery()) { expect(rs.next() && rs.getInt(1) == id + j, "result"); }
                        }
                        try (Statement s = c.createStatement()) { s.execute("INSERT INTO " + T + " VALUES (" + (1000 + id) + ", 'many')"); }
                    }
                    return null;
                }));
            }
            int bad = 0; String first = null;
            for (Future<?> f : fs) {
                try { f.get(25, TimeUnit.SECONDS); } catch (Exception e) { bad++; if (first == null) first = String.valueOf(e.getCause() != null ? e.getCause() : e); }
            }
            expect(bad == 0, bad + "/" + MANY_CLIENTS + " clients failed; first: " + first);
            try (Connection c = connect()) {
                Object n = one(c, "WITH w AS (UPDATE " + T + " SET v = v WHERE false RETURNING 1) SELECT count(*) FROM " + T + " WHERE v = 'many'");
                expect(((Number) n).intValue() == MANY_CLIENTS, "rows = " + n);
            }
        });
        if (MODE.equals("direct")) {
            System.out.println("skip commit_token: lsnpool's ParameterStatus: only through lsnpool");
        } else run("commit_token", () -> {
            // lsnpool reports each commit's LSN as ParameterStatus lsnpool.commit_lsn (asked for
            // with SET, which pgjdbc sends through the extended protocol); pgjdbc keeps every
            // ParameterStatus for PGConnection.getParameterStatus. The token, presented on a
            // fresh connection reading under `eventual`, must make that read see the commit.
            try (Connection w = connect(); Statement s = w.createStatement();
                 PreparedStatement up = w.prepareStatement("UPDATE " + T + " SET v = ? WHERE id = " + TOKEN_ROW);
                 PreparedStatement after = w.prepareStatement("SELECT ?::int + 1")) {
                PGConnection pg = w.unwrap(PGConnection.class);
                s.execute("SET lsnpool.report_commit_lsn = on");
                s.execute("INSERT INTO " + T + " VALUES (" + TOKEN_ROW + ", '0')");
                long prev = parseLsn(pg.getParameterStatus(COMMIT_LSN));
                for (int i = 1; i <= TOKEN_ROUNDS; i++) {
                    up.setString(1, String.valueOf(i));
                    up.executeUpdate();
                    String token = pg.getParameterStatus(COMMIT_LSN);
                    long lsn = parseLsn(token);
                    expect(Long.compareUnsigned(lsn, prev) > 0, "commit " + i + ": " + COMMIT_LSN + " " + token + " did not advance");
                    prev = lsn;
                    after.setInt(1, i);
                    try (ResultSet rs = after.executeQuery()) { expect(rs.next() && rs.getInt(1) == i + 1, "query after the ParameterStatus"); }
                    try (Connection r = connect(); Statement rs = r.createStatement()) {
                        if (MODE.equals("auto")) rs.execute("SET lsnpool.consistency = 'eventual'");
                        rs.execute("SET lsnpool.min_lsn = '" + token + "'");
                        Object v = one(r, "SELECT v FROM " + T + " WHERE id = " + TOKEN_ROW);
                        expect(String.valueOf(i).equals(v), "read with token " + token + " saw v = " + v + ", not " + i + " (stale)");
                    }
                }
            }
        });
        run("cleanup", () -> {
            try (Connection c = connect(); Statement s = c.createStatement()) { s.execute("DROP TABLE IF EXISTS " + T); }
        });
        System.out.flush();
        System.exit(failed == 0 ? 0 : 1);
    }
}
