// pgjdbc through Ocelot with prepareThreshold=1: every PreparedStatement becomes a named server-side statement
// on its first execution. Usage: java -cp postgresql.jar:. JdbcCheck PORT
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;

public class JdbcCheck {
    static final int CLIENTS = 6, ROUNDS = 25;

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/app?user=postgres&prepareThreshold=1";
        ExecutorService pool = Executors.newFixedThreadPool(CLIENTS);
        List<Future<Integer>> results = new ArrayList<>();
        for (int n = 0; n < CLIENTS; n++) {
            final int client = n;
            results.add(pool.submit(() -> run(url, client)));
        }
        int total = 0;
        for (Future<Integer> f : results) total += f.get();
        pool.shutdown();
        System.out.println("pgjdbc: " + total + " checks passed");
    }

    static int run(String url, int client) throws SQLException {
        int checks = 0;
        try (Connection c = DriverManager.getConnection(url);
             PreparedStatement add = c.prepareStatement("SELECT ?::int + ?::int");
             PreparedStatement echo = c.prepareStatement("SELECT ?::text || '!'")) {
            for (int i = 0; i < ROUNDS; i++) {
                add.setInt(1, i);
                add.setInt(2, client);
                try (ResultSet rs = add.executeQuery()) {
                    rs.next();
                    if (rs.getInt(1) != i + client) throw new SQLException("add: " + rs.getInt(1));
                }
                echo.setString(1, "j" + client + "i" + i);
                try (ResultSet rs = echo.executeQuery()) {
                    rs.next();
                    if (!rs.getString(1).equals("j" + client + "i" + i + "!")) throw new SQLException("echo: " + rs.getString(1));
                }
                checks += 2;
            }
            c.setAutoCommit(false);
            try (PreparedStatement tx = c.prepareStatement("SELECT txid_current() = txid_current()")) {
                for (int i = 0; i < 3; i++) {
                    try (ResultSet rs = tx.executeQuery()) {
                        rs.next();
                        if (!rs.getBoolean(1)) throw new SQLException("txid");
                    }
                }
            }
            c.commit();
            checks += 1;
        }
        return checks;
    }
}
