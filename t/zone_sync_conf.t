#!/usr/bin/perl

# Configuration of ngx_stream_zone_sync_module: every directive of the
# reference accepted in its contexts and refused elsewhere, every refusal
# of "nginx -t" with its exact message and location, and the effective
# defaults, inheritance and overrides, read from the "zone_sync: settings"
# debug line worker 0 logs when it starts the engine.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;

use Test::Nginx;

###############################################################################

my $t = Test::Nginx->new()->has(qw/http stream stream_return zone_sync debug/)
    ->has_daemon('openssl');

my $dir = $t->testdir();

chomp(my $page = `getconf PAGESIZE`);
$page = 4096 unless $page =~ /^\d+$/;

# directives allowed in "stream" and "server", each with a valid value
my @MAIN_SRV = (
    [ zone_sync_buffers                 => '8 8k' ],
    [ zone_sync_connect_retry_interval  => '2s' ],
    [ zone_sync_connect_timeout         => '3s' ],
    [ zone_sync_interval                => '500ms' ],
    [ zone_sync_recv_buffer_size        => '128k' ],
    [ zone_sync_timeout                 => '10s' ],
    [ zone_sync_ssl                     => 'on' ],
    [ zone_sync_ssl_certificate         => 'enc.crt' ],
    [ zone_sync_ssl_certificate_key     => 'enc.key' ],
    [ zone_sync_ssl_ciphers             => 'HIGH:!aNULL' ],
    [ zone_sync_ssl_conf_command        => 'Options -SessionTicket' ],
    [ zone_sync_ssl_crl                 => 'ca.crl' ],
    [ zone_sync_ssl_name                => 'node.example.com' ],
    [ zone_sync_ssl_password_file       => 'right.pass' ],
    [ zone_sync_ssl_protocols           => 'TLSv1.2 TLSv1.3' ],
    [ zone_sync_ssl_server_name         => 'on' ],
    [ zone_sync_ssl_trusted_certificate => 'ca.crt' ],
    [ zone_sync_ssl_verify              => 'on' ],
    [ zone_sync_ssl_verify_depth        => '2' ],
);
my %VALUE = map { @$_ } @MAIN_SRV;
my @SINGLE = grep { $_ ne 'zone_sync_ssl_conf_command' } map { $_->[0] }
    @MAIN_SRV;

my @BAD_VALUES = (
    [ zone_sync_buffers => '0 4k',
        'invalid number of buffers "0" in "zone_sync_buffers" directive' ],
    [ zone_sync_buffers => 'x 4k',
        'invalid number of buffers "x" in "zone_sync_buffers" directive' ],
    [ zone_sync_buffers => '-1 4k',
        'invalid number of buffers "-1" in "zone_sync_buffers" directive' ],
    [ zone_sync_buffers => '8 0',
        'invalid buffer size "0" in "zone_sync_buffers" directive' ],
    [ zone_sync_buffers => '8 4q',
        'invalid buffer size "4q" in "zone_sync_buffers" directive' ],
    [ zone_sync_buffers => '8',
        'invalid number of arguments in "zone_sync_buffers" directive' ],
    [ zone_sync_recv_buffer_size => '0', nonzero('zone_sync_recv_buffer_size', '0') ],
    [ zone_sync_recv_buffer_size => '1q',
        '"zone_sync_recv_buffer_size" directive invalid value' ],
    [ zone_sync_connect_retry_interval => '0',
        nonzero('zone_sync_connect_retry_interval', '0') ],
    [ zone_sync_connect_retry_interval => '1x',
        '"zone_sync_connect_retry_interval" directive invalid value' ],
    [ zone_sync_connect_timeout => '0s',
        nonzero('zone_sync_connect_timeout', '0s') ],
    [ zone_sync_connect_timeout => 'soon',
        '"zone_sync_connect_timeout" directive invalid value' ],
    [ zone_sync_interval => '0ms', nonzero('zone_sync_interval', '0ms') ],
    [ zone_sync_interval => 'abc',
        '"zone_sync_interval" directive invalid value' ],
    [ zone_sync_timeout => '0', nonzero('zone_sync_timeout', '0') ],
    [ zone_sync_timeout => '5 s',
        'invalid number of arguments in "zone_sync_timeout" directive' ],
    [ zone_sync_timeout => '-5s',
        '"zone_sync_timeout" directive invalid value' ],
    [ zone_sync_ssl_verify_depth => '0',
        nonzero('zone_sync_ssl_verify_depth', '0') ],
    [ zone_sync_ssl_verify_depth => 'x',
        '"zone_sync_ssl_verify_depth" directive invalid number' ],
    [ zone_sync_ssl => 'yes', 'invalid value "yes" in "zone_sync_ssl" '
        . 'directive, it must be "on" or "off"' ],
    [ zone_sync_ssl_verify => '1', 'invalid value "1" in '
        . '"zone_sync_ssl_verify" directive, it must be "on" or "off"' ],
    [ zone_sync_ssl_server_name => 'of', 'invalid value "of" in '
        . '"zone_sync_ssl_server_name" directive, it must be "on" or "off"' ],
    [ zone_sync_ssl_protocols => 'TLSv1.2 TLSv9',
        'invalid value "TLSv9" in "zone_sync_ssl_protocols" directive' ],
    [ zone_sync_ssl_protocols => 'SSL',
        'invalid value "SSL" in "zone_sync_ssl_protocols" directive' ],
    [ zone_sync_ssl_conf_command => 'Options',
        'invalid number of arguments in "zone_sync_ssl_conf_command" directive' ],
);

$t->plan(
    2                           # every directive, every context
    + 3                         # address forms
    + 3                         # protocol names, conf commands
    + @MAIN_SRV + 5             # wrong contexts
    + 15                        # zone_sync / zone_sync_server refusals
    + 1 + @BAD_VALUES           # sizes, counts, times
    + 13                        # ssl refusals and password files
    + 2 * @SINGLE + 1           # duplicates, server and stream level
    + 4                         # valid run: nginx -t, log, settings
    + 8                         # defaults, inheritance, overrides
    + 2                         # retry interval behaviour
);

###############################################################################

# Certificates: a CA with a CRL, a node key encrypted with "secret".

openssl('req -x509 -new -nodes -days 1 -subj /CN=ca -newkey rsa:2048 '
    . "-keyout $dir/ca.key -out $dir/ca.crt");
openssl("genrsa -aes256 -passout pass:secret -out $dir/enc.key 2048");
openssl("req -x509 -new -key $dir/enc.key -passin pass:secret -days 1 "
    . "-subj /CN=node.example.com -out $dir/enc.crt");

$t->write_file('ca.cnf', <<"EOF");
[ ca ]
default_ca = myca

[ myca ]
new_certs_dir = $dir
database = $dir/certindex
default_md = sha256
default_crl_days = 1
EOF
$t->write_file('certindex', '');
openssl("ca -gencrl -config $dir/ca.cnf -keyfile $dir/ca.key "
    . "-cert $dir/ca.crt -out $dir/ca.crl");

$t->write_file('right.pass', "wrong1\nsecret\nwrong2\n");
$t->write_file('wrong.pass', "wrong1\nwrong2\n");

###############################################################################

# Every directive in every allowed context: stream, the zone_sync server,
# and another server (inherited, unused there).

my $all = join('', map { "$_->[0] $_->[1];\n" } @MAIN_SRV)
    . "zone_sync_ssl_conf_command Groups X25519:P-256;\n";

my ($code, $out) = nginx_t(stream_conf(<<"EOF"));
$all
server {
    listen 127.0.0.1:8081;
    zone_sync;
    zone_sync_server 127.0.0.1:8082;
    zone_sync_server localhost:8083;
    zone_sync_server [::1]:8084;
    zone_sync_server unix:$dir/sync.sock;
$all
}

server {
    listen 127.0.0.1:8085;
    return "";
$all
}
EOF
ok($code == 0 && $out =~ /test is successful/, 'every directive accepted')
    or diag($out);
unlike($out, qr/\[(?:warn|error|crit|alert|emerg)\]/,
    'every directive: nothing above notice');

# addresses: host:port, [v6]:port, unix:/path, a name with "resolve"

ok(accepted(sync_server('zone_sync_server [::1]:8082;')), 'address [v6]:port');
ok(accepted(sync_server("zone_sync_server unix:$dir/a.sock;\n"
    . "zone_sync_server unix:$dir/b.sock;")), 'address unix:/path');
ok(accepted(stream_conf(<<'EOF')), 'address host:port resolve');
resolver 127.0.0.1:8053;
server {
    listen 127.0.0.1:8081;
    zone_sync;
    zone_sync_server localhost:8082 resolve;
}
EOF

# every protocol name of the reference; conf commands, several on a level

ok(accepted(sync_server('zone_sync_ssl_protocols SSLv2 SSLv3 TLSv1 '
    . 'TLSv1.1 TLSv1.2 TLSv1.3;')), 'every protocol name');
ok(accepted(sync_server("zone_sync_ssl on;\n"
    . "zone_sync_ssl_conf_command Options -SessionTicket;\n"
    . "zone_sync_ssl_conf_command Options -SessionTicket;\n")),
    'zone_sync_ssl_conf_command twice on one level');
ok(accepted(stream_conf(<<'EOF')), 'zone_sync_ssl_conf_command inherited');
zone_sync_ssl on;
zone_sync_ssl_conf_command Options -SessionTicket;
server {
    listen 127.0.0.1:8081;
    zone_sync;
    zone_sync_server 127.0.0.1:8082;
}
EOF

###############################################################################

# Wrong contexts: nginx's own message.

for my $d (@MAIN_SRV) {
    refused("$d->[0] in http", conf(<<"EOF"),
http {
    %%TEST_GLOBALS_HTTP%%
    $d->[0] $d->[1]; # <A>
}
EOF
        qq{"$d->[0]" directive is not allowed here in <A>});
}

refused('zone_sync at stream level', stream_conf(<<'EOF'),
zone_sync; # <A>
server {
    listen 127.0.0.1:8081;
    zone_sync_server 127.0.0.1:8082;
}
EOF
    '"zone_sync" directive is not allowed here in <A>');

refused('zone_sync_server at stream level', stream_conf(<<'EOF'),
zone_sync_server 127.0.0.1:8082; # <A>
server {
    listen 127.0.0.1:8081;
    zone_sync;
}
EOF
    '"zone_sync_server" directive is not allowed here in <A>');

refused('zone_sync in http server', conf(<<'EOF'),
http {
    %%TEST_GLOBALS_HTTP%%
    server {
        listen 127.0.0.1:8080;
        zone_sync; # <A>
    }
}
EOF
    '"zone_sync" directive is not allowed here in <A>');

refused('zone_sync_buffers at main level', conf(<<'EOF'),
zone_sync_buffers 8 4k; # <A>
EOF
    '"zone_sync_buffers" directive is not allowed here in <A>');

refused('zone_sync_server in upstream', stream_conf(<<'EOF'),
upstream u {
    server 127.0.0.1:8082;
    zone_sync_server 127.0.0.1:8083; # <A>
}
EOF
    '"zone_sync_server" directive is not allowed here in <A>');

###############################################################################

# zone_sync_server and zone_sync

refused('no port', sync_server('zone_sync_server 127.0.0.1; # <A>'),
    'no port in "127.0.0.1" of the "zone_sync_server" directive in <A>');
refused('no port in a name', sync_server('zone_sync_server localhost; # <A>'),
    'no port in "localhost" of the "zone_sync_server" directive in <A>');
refused('bad port', sync_server('zone_sync_server 127.0.0.1:99999; # <A>'),
    'invalid port in "127.0.0.1:99999" of the "zone_sync_server" directive '
    . 'in <A>');
refused('bad host', sync_server('zone_sync_server 127.0.0.1:1/x; # <A>'),
    'invalid host in "127.0.0.1:1/x" of the "zone_sync_server" directive '
    . 'in <A>');
refused('bad parameter',
    sync_server('zone_sync_server 127.0.0.1:8082 resolv; # <A>'),
    'invalid parameter "resolv" in "zone_sync_server" directive in <A>');
refused('same node twice', sync_server(<<'EOF'),
zone_sync_server 127.0.0.1:8082;
zone_sync_server 127.0.0.1:8082; # <A>
EOF
    'duplicate node "127.0.0.1:' . port(8082) . '" in "zone_sync_server" '
    . 'directive in <A>');
refused('same node by two names', sync_server(<<'EOF'),
zone_sync_server 127.0.0.1:8082;
zone_sync_server localhost:8082; # <A>
EOF
    'duplicate node "localhost:' . port(8082) . '" in "zone_sync_server" '
    . 'directive, the same as "127.0.0.1:' . port(8082) . '" in <A>');

refused('resolve with static servers', resolver_server(<<'EOF'),
zone_sync_server 127.0.0.1:8082;
zone_sync_server localhost:8083 resolve; # <A>
EOF
    'a "zone_sync_server" with "resolve" cannot be mixed with static '
    . 'servers in <A>');
refused('static servers after resolve', resolver_server(<<'EOF'),
zone_sync_server localhost:8083 resolve;
zone_sync_server 127.0.0.1:8082; # <A>
EOF
    'a "zone_sync_server" with "resolve" cannot be mixed with static '
    . 'servers in <A>');
refused('resolve with an address', resolver_server(<<'EOF'),
zone_sync_server 127.0.0.1:8083 resolve; # <A>
EOF
    '"resolve" needs a name, not the address "127.0.0.1:' . port(8083)
    . '", in the "zone_sync_server" directive in <A>');
refused('two resolve servers', resolver_server(<<'EOF'),
zone_sync_server localhost:8082 resolve;
zone_sync_server localhost:8083 resolve; # <A>
EOF
    'only one "zone_sync_server" with "resolve" is allowed in <A>');

refused('resolve without resolver', stream_conf(<<'EOF'),
server { # <S>
    listen 127.0.0.1:8081;
    zone_sync;
    zone_sync_server localhost:8082 resolve;
}
EOF
    'no resolver defined to resolve names at run time in "zone_sync_server" '
    . 'for server in <S>');

refused('zone_sync without zone_sync_server', stream_conf(<<'EOF'),
server { # <S>
    listen 127.0.0.1:8081;
    zone_sync;
}
EOF
    '"zone_sync" requires at least one "zone_sync_server" for server in <S>');

refused('zone_sync_server without zone_sync', stream_conf(<<'EOF'),
server {
    listen 127.0.0.1:8081;
    zone_sync;
    zone_sync_server 127.0.0.1:8082;
}
server { # <S>
    listen 127.0.0.1:8083;
    zone_sync_server 127.0.0.1:8082;
}
EOF
    '"zone_sync_server" requires "zone_sync" for server in <S>');

refused('zone_sync in two servers', stream_conf(<<'EOF'),
server {
    listen 127.0.0.1:8081;
    zone_sync; # <F>
    zone_sync_server 127.0.0.1:8082;
}
server {
    listen 127.0.0.1:8083;
    zone_sync; # <A>
    zone_sync_server 127.0.0.1:8082;
}
EOF
    '"zone_sync" directive is duplicate in <A>, another server enables it '
    . 'in <F>');

###############################################################################

# sizes, counts, times

refused('recv buffer smaller than a buffer', stream_conf(<<'EOF'),
zone_sync_buffers 4 16k;
server { # <S>
    listen 127.0.0.1:8081;
    zone_sync;
    zone_sync_server 127.0.0.1:8082;
    zone_sync_recv_buffer_size 8k;
}
EOF
    '"zone_sync_recv_buffer_size" (8192) must be at least one '
    . '"zone_sync_buffers" buffer (16384) for server in <S>');

for my $b (@BAD_VALUES) {
    my ($d, $v, $msg) = @$b;
    refused("$d $v", sync_server("$d $v; # <A>"), "$msg in <A>");
}

###############################################################################

# TLS

refused('unknown cipher', sync_server(<<'EOF'),
zone_sync_ssl on;
zone_sync_ssl_ciphers NO-SUCH-CIPHER;
EOF
    qr/^SSL_CTX_set_cipher_list\("NO-SUCH-CIPHER"\) failed \(SSL: .*\) while setting "zone_sync_ssl_ciphers" for server in <S>$/);

refused('certificate without key', sync_server(<<'EOF'),
zone_sync_ssl on;
zone_sync_ssl_certificate enc.crt;
EOF
    '"zone_sync_ssl_certificate" requires "zone_sync_ssl_certificate_key" '
    . 'for server in <S>');

refused('key without certificate', sync_server(<<'EOF'),
zone_sync_ssl on;
zone_sync_ssl_certificate_key enc.key;
EOF
    '"zone_sync_ssl_certificate_key" requires "zone_sync_ssl_certificate" '
    . 'for server in <S>');

refused('verify without trusted certificate', sync_server(<<'EOF'),
zone_sync_ssl on;
zone_sync_ssl_verify on;
EOF
    '"zone_sync_ssl_verify" requires "zone_sync_ssl_trusted_certificate" '
    . 'for server in <S>');

refused('unreadable certificate', sync_server(<<'EOF'),
zone_sync_ssl on;
zone_sync_ssl_certificate missing.crt;
zone_sync_ssl_certificate_key enc.key;
zone_sync_ssl_password_file right.pass;
EOF
    qr/^cannot load certificate "<DIR>\/missing\.crt": BIO_new_file\(\) failed \(SSL: .*\) while loading "zone_sync_ssl_certificate" and "zone_sync_ssl_certificate_key" for server in <S>$/);

refused('unreadable key', sync_server(<<'EOF'),
zone_sync_ssl on;
zone_sync_ssl_certificate enc.crt;
zone_sync_ssl_certificate_key missing.key;
EOF
    qr/^cannot load certificate key "<DIR>\/missing\.key": .*\(SSL: .*\) while loading "zone_sync_ssl_certificate" and "zone_sync_ssl_certificate_key" for server in <S>$/);

refused('unreadable trusted certificate', sync_server(<<'EOF'),
zone_sync_ssl on;
zone_sync_ssl_trusted_certificate missing.crt;
EOF
    qr/^(?:cannot load certificate "<DIR>\/missing\.crt": BIO_new_file\(\)|SSL_CTX_load_verify_locations\("<DIR>\/missing\.crt"\)) failed \(SSL: .*\) while loading "zone_sync_ssl_trusted_certificate" for server in <S>$/);

refused('unreadable crl', sync_server(<<'EOF'),
zone_sync_ssl on;
zone_sync_ssl_verify on;
zone_sync_ssl_trusted_certificate ca.crt;
zone_sync_ssl_crl missing.crl;
EOF
    qr/^(?:cannot load CRL "<DIR>\/missing\.crl": BIO_new_file\(\)|X509_LOOKUP_load_file\("<DIR>\/missing\.crl"\)) failed \(SSL: .*\) while loading "zone_sync_ssl_crl" for server in <S>$/);

refused('unreadable password file',
    sync_server('zone_sync_ssl_password_file missing.pass; # <A>'),
    'open() "<DIR>/missing.pass" failed (2: No such file or directory) in <A> '
    . 'while reading "zone_sync_ssl_password_file"');

refused('encrypted key without password file', sync_server(<<'EOF'),
zone_sync_ssl on;
zone_sync_ssl_certificate enc.crt;
zone_sync_ssl_certificate_key enc.key;
EOF
    qr/^cannot load certificate key "<DIR>\/enc\.key": PEM_read_bio_PrivateKey\(\) failed \(SSL: .*\) while loading "zone_sync_ssl_certificate" and "zone_sync_ssl_certificate_key" for server in <S>$/);

refused('wrong passphrases', sync_server(<<'EOF'),
zone_sync_ssl on;
zone_sync_ssl_certificate enc.crt;
zone_sync_ssl_certificate_key enc.key;
zone_sync_ssl_password_file wrong.pass;
EOF
    qr/^cannot load certificate key "<DIR>\/enc\.key": PEM_read_bio_PrivateKey\(\) failed \(SSL: .*bad decrypt.*\) while loading "zone_sync_ssl_certificate" and "zone_sync_ssl_certificate_key" for server in <S>$/);

ok(accepted(sync_server(<<'EOF')), 'right passphrase among others');
zone_sync_ssl on;
zone_sync_ssl_certificate enc.crt;
zone_sync_ssl_certificate_key enc.key;
zone_sync_ssl_password_file right.pass;
EOF

ok(accepted(stream_conf(<<'EOF')), 'files unchecked with zone_sync_ssl off');
zone_sync_ssl_certificate missing.crt;
zone_sync_ssl_certificate_key missing.key;
zone_sync_ssl_trusted_certificate missing.crt;
zone_sync_ssl_crl missing.crl;
zone_sync_ssl_verify on;
server {
    listen 127.0.0.1:8081;
    zone_sync;
    zone_sync_server 127.0.0.1:8082;
}
EOF

###############################################################################

# Duplicates: each single-valued directive twice on one level.

for my $d ('zone_sync', @SINGLE) {
    my $v = $d eq 'zone_sync' ? '' : " $VALUE{$d}";
    my $enable = $d eq 'zone_sync' ? '' : 'zone_sync;';
    refused("$d twice in server", stream_conf(<<"EOF"),
server {
    listen 127.0.0.1:8081;
    zone_sync_server 127.0.0.1:8082;
    $enable
    $d$v;
    $d$v; # <A>
}
EOF
        qq{"$d" directive is duplicate in <A>});
}

for my $d (@SINGLE) {
    refused("$d twice in stream", stream_conf(<<"EOF"),
$d $VALUE{$d};
$d $VALUE{$d}; # <A>
server {
    listen 127.0.0.1:8081;
    zone_sync;
    zone_sync_server 127.0.0.1:8082;
}
EOF
        qq{"$d" directive is duplicate in <A>});
}

###############################################################################

# A valid configuration: nothing above notice, from nginx -t or at run
# time.  The node's only peer is itself (recognised and left alone).

$t->write_file_expand('nginx.conf', stream_conf(<<'EOF', <<'EOF'));
keyval_zone zone=s:64k sync;
server {
    listen 127.0.0.1:8081;
    zone_sync;
    zone_sync_server 127.0.0.1:8081;
}
EOF
keyval_zone zone=h:64k sync;
EOF

($code, $out) = $t->test_config();
ok($code == 0 && $out !~ /\[(?:warn|error|crit|alert|emerg)\]/,
    'valid: nginx -t says nothing above notice') or diag($out);

my $offset = log_size();
$t->run();
my $node = '127.0.0.1:' . port(8081);
ok(wait_for(sub { log_since($offset) =~ /zone_sync: node \Q$node\E is this node/ }),
    'valid: the node recognises itself');
like(settings($offset) // '', qr/, zones 2$/, 'valid: both synced zones');
$t->stop();
is(join("\n", log_since($offset) =~ /^(.*\[(?:warn|error|crit|alert|emerg)\].*)$/mg),
    '', 'valid: error log has nothing above notice');

###############################################################################

# Defaults, inheritance stream -> server, overrides.  The peer is a port
# nobody listens on; the settings are logged before any connection.

my %DEFAULT = (
    buffers => "8 $page",
    connect_retry_interval => '1000ms',
    connect_timeout => '5000ms',
    interval => '1000ms',
    recv_buffer_size => 8 * $page,
    timeout => '5000ms',
    ssl => 'off',
    ssl_protocols => '"TLSv1.2 TLSv1.3"',
    ssl_ciphers => '"DEFAULT"',
    ssl_verify => 'off',
    ssl_verify_depth => 1,
    ssl_server_name => 'off',
    ssl_name => '""',
    zones => 0,
);

my $stream_set = <<'EOF';
zone_sync_buffers 3 16k;
zone_sync_connect_retry_interval 2s;
zone_sync_connect_timeout 3s;
zone_sync_interval 500ms;
zone_sync_timeout 7s;
zone_sync_ssl on;
zone_sync_ssl_protocols TLSv1.3;
zone_sync_ssl_ciphers HIGH;
zone_sync_ssl_verify on;
zone_sync_ssl_trusted_certificate ca.crt;
zone_sync_ssl_verify_depth 3;
zone_sync_ssl_server_name on;
zone_sync_ssl_name stream.example.com;
EOF

my %STREAM = (
    buffers => '3 16384',
    connect_retry_interval => '2000ms',
    connect_timeout => '3000ms',
    interval => '500ms',
    recv_buffer_size => 3 * 16384,
    timeout => '7000ms',
    ssl => 'on',
    ssl_protocols => '"TLSv1.3"',
    ssl_ciphers => '"HIGH"',
    ssl_verify => 'on',
    ssl_verify_depth => 3,
    ssl_server_name => 'on',
    ssl_name => '"stream.example.com"',
    zones => 0,
);

my $server_set = <<'EOF';
zone_sync_buffers 2 8k;
zone_sync_connect_retry_interval 250ms;
zone_sync_connect_timeout 4s;
zone_sync_interval 2s;
zone_sync_recv_buffer_size 100k;
zone_sync_timeout 9s;
zone_sync_ssl off;
zone_sync_ssl_protocols TLSv1.2;
zone_sync_ssl_ciphers MEDIUM;
zone_sync_ssl_verify off;
zone_sync_ssl_verify_depth 5;
zone_sync_ssl_server_name off;
zone_sync_ssl_name server.example.com;
EOF

my %SERVER = (
    buffers => '2 8192',
    connect_retry_interval => '250ms',
    connect_timeout => '4000ms',
    interval => '2000ms',
    recv_buffer_size => 100 * 1024,
    timeout => '9000ms',
    ssl => 'off',
    ssl_protocols => '"TLSv1.2"',
    ssl_ciphers => '"MEDIUM"',
    ssl_verify => 'off',
    ssl_verify_depth => 5,
    ssl_server_name => 'off',
    ssl_name => '"server.example.com"',
    zones => 0,
);

is(run_settings(''), expected(%DEFAULT), 'defaults');
is(run_settings('', 'worker_processes 2;'), expected(%DEFAULT),
    'defaults, two workers');
is(scalar(() = log_since($offset) =~ /zone_sync: settings:/g), 1,
    'two workers: only worker 0 runs the engine');

is(run_settings($stream_set), expected(%STREAM), 'inherited from stream');
is(run_settings('', '', $server_set), expected(%SERVER), 'set in server');
is(run_settings($stream_set, '', $server_set), expected(%SERVER),
    'server overrides stream');

# partly: recv_buffer_size follows the buffers it is not given with

is(run_settings("zone_sync_recv_buffer_size 40k;\nzone_sync_ssl on;\n", '',
    "zone_sync_buffers 5 8k;\nzone_sync_timeout 1s;\n"),
    expected(%DEFAULT, buffers => '5 8192', recv_buffer_size => 40960,
        timeout => '1000ms', ssl => 'on'),
    'mixed stream and server');
is(run_settings("zone_sync_buffers 3 16k;\n", '',
    "zone_sync_buffers 6 4k;\n"),
    expected(%DEFAULT, buffers => "6 4096", recv_buffer_size => 6 * 4096),
    'recv_buffer_size default: the server\'s buffers');

###############################################################################

# zone_sync_connect_retry_interval in effect: a peer that accepts and
# closes is retried every 50ms, not every second.

my $accepts = "$dir/accepts";
$t->run_daemon(\&closing_daemon, port(8086), $accepts);
$t->waitforsocket('127.0.0.1:' . port(8086));

$t->write_file_expand('nginx.conf', stream_conf(<<'EOF'));
zone_sync_connect_retry_interval 50ms;
server {
    listen 127.0.0.1:8081;
    zone_sync;
    zone_sync_server 127.0.0.1:8086;
}
EOF
$offset = log_size();
$t->run();
ok(wait_for(sub { (-s $accepts // 0) >= 10 }, timeout => 3),
    'retried at zone_sync_connect_retry_interval');

# ... and the failure, the same each time, is logged once

my $peer = '127.0.0.1:' . port(8086);
is(join("\n", log_since($offset) =~ /\[error\] \d+#\d+: (zone_sync: node \Q$peer\E: .*)$/mg),
    "zone_sync: node $peer: connection closed by peer",
    'repeated failure logged once');
$t->stop();

###############################################################################

sub openssl {
    my ($args) = @_;
    system("openssl $args >>$dir/openssl.log 2>&1") == 0
        or die "openssl $args failed:\n" . $t->read_file('openssl.log');
}

sub nonzero {
    my ($d, $v) = @_;
    return qq{invalid value "$v" in "$d" directive, it must be greater }
        . 'than zero';
}

sub conf {
    my ($body) = @_;
    return <<"EOF";
%%TEST_GLOBALS%%

events {
}

$body
EOF
}

# a configuration with a stream block (and an http block if given)
sub stream_conf {
    my ($stream, $http) = @_;
    $stream =~ s/^/    /mg;
    my $h = '';
    if (defined $http) {
        $http =~ s/^/    /mg;
        $h = "http {\n    %%TEST_GLOBALS_HTTP%%\n$http}\n";
    }
    return conf("$h\nstream {\n    %%TEST_GLOBALS_STREAM%%\n$stream}\n");
}

# the zone_sync server with extra directives; its line is <S>
sub sync_server {
    my ($extra) = @_;
    $extra =~ s/^/    /mg;
    return stream_conf(<<"EOF");
server { # <S>
    listen 127.0.0.1:8081;
    zone_sync;
    zone_sync_server 127.0.0.1:8090;
$extra
}
EOF
}

sub resolver_server {
    my ($extra) = @_;
    $extra =~ s/^/    /mg;
    return stream_conf(<<"EOF");
resolver 127.0.0.1:8053;
server {
    listen 127.0.0.1:8081;
    zone_sync;
$extra
}
EOF
}

sub nginx_t {
    my ($conf) = @_;
    $t->write_file_expand('nginx.conf', $conf);
    return $t->test_config('nginx.conf');
}

sub accepted {
    my ($conf) = @_;
    my ($code, $out) = nginx_t($conf);
    return 1 if $code == 0 && $out !~ /\[(?:warn|error|crit|alert|emerg)\]/;
    diag($out);
    return 0;
}

# nginx -t refuses with exactly one [emerg]: $expect is the exact text
# (a string) or a qr//; in both, <X> is the location "file:line" of the
# line marked "# <X>" in the configuration, <DIR> the test directory.
sub refused {
    my ($name, $conf, $expect) = @_;

    my ($code, $out) = nginx_t($conf);

    my %loc;
    my @lines = split /\n/, $t->read_file('nginx.conf');
    for my $i (0 .. $#lines) {
        $loc{$1} = "$dir/nginx.conf:" . ($i + 1)
            while $lines[$i] =~ /# <([A-Z])>/g;
    }

    my @emerg = $out =~ /^nginx: \[emerg\] (.*)$/mg;
    my $got = ($code == 0 ? "(exit code 0) " : '') . join("\n", @emerg);

    if (ref $expect) {
        my $re = "$expect";
        $re =~ s/<([A-Z])>/quotemeta($loc{$1} \/\/ "<$1?>")/ge;
        $re =~ s/<DIR>/quotemeta($dir)/ge;
        return like($got, qr/$re/, $name);
    }

    $expect =~ s/<([A-Z])>/$loc{$1} \/\/ "<$1?>"/ge;
    $expect =~ s/<DIR>/$dir/g;
    return is($got, $expect, $name);
}

sub log_size {
    return -s "$dir/error.log" || 0;
}

sub log_since {
    my ($offset) = @_;
    open my $fh, '<', "$dir/error.log" or return '';
    seek($fh, $offset, 0);
    local $/;
    my $s = <$fh>;
    return $s // '';
}

# the settings line logged since $offset, without the node id
sub settings {
    my ($offset) = @_;
    my $line;
    wait_for(sub {
        ($line) = log_since($offset) =~ /\[debug\] \d+#\d+: zone_sync: settings: (.*)$/m;
        defined $line;
    }) or return undef;
    $line =~ s/, node id [0-9a-f]{16}$// or return "bad node id: $line";
    return $line;
}

# runs nginx with directives at stream level, at main level and in the
# zone_sync server; returns the settings line
sub run_settings {
    my ($stream, $main, $server) = @_;
    $server //= '';
    $server =~ s/^/    /mg;
    my $c = stream_conf($stream . <<"EOF");
server {
    listen 127.0.0.1:8081;
    zone_sync;
    zone_sync_server 127.0.0.1:8090;
$server
}
EOF
    $c =~ s/^(events)/$main\n$1/m if $main;

    $t->write_file_expand('nginx.conf', $c);
    $offset = log_size();
    $t->run();
    my $line = settings($offset);
    $t->stop();
    return $line;
}

sub expected {
    my (%s) = @_;
    return join(', ', map { "$_ $s{$_}" } qw/buffers connect_retry_interval
        connect_timeout interval recv_buffer_size timeout ssl ssl_protocols
        ssl_ciphers ssl_verify ssl_verify_depth ssl_server_name ssl_name
        zones/);
}

# accepts connections, reads what the node sends and closes them,
# counting them (one byte each) in a file
sub closing_daemon {
    my ($port, $file) = @_;
    my $server = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port",
        Listen => 16, ReuseAddr => 1)
        or die "cannot listen on $port: $!\n";

    while (my $client = $server->accept()) {
        $client->sysread(my $buf, 65536);
        close $client;
        open my $fh, '>>', $file or die "$file: $!\n";
        print $fh 'x';
        close $fh;
    }
}

###############################################################################
