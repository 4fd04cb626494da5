# A stand-in for the toxiproxy gem and server that PgCat's Ruby specs use (neither is packaged by Debian): each
# proxy forwards TCP in this process, and the two toxics the specs apply are emulated. `limit_data` (bytes: 1)
# cuts every connection and refuses new ones, as a dead server; `latency` delays what flows back to the client.
require 'socket'
# The gem loads net/http, which loads timeout: copy_spec uses Timeout without requiring it.
require 'timeout'

module Toxiproxy
  @proxies = {}

  class Toxic
    attr_reader :type, :attrs

    def initialize(proxy, type, attrs)
      @proxy = proxy
      @type = type
      @attrs = attrs
    end

    def save
      @proxy.add(self)
      self
    end

    def destroy
      @proxy.remove(self)
    end
  end

  # What `proxy.toxic(...)` returns: toxics to save, or to apply around a block.
  class Collection
    attr_reader :toxics

    def initialize(toxics)
      @toxics = toxics
    end

    def apply
      @toxics.each(&:save)
      yield
    ensure
      @toxics.each(&:destroy)
    end
  end

  class Proxy
    attr_reader :name

    def initialize(name, listen, upstream)
      @name = name
      @toxics = []
      @conns = []
      @lock = Mutex.new
      host, port = listen.split(':')
      @up_host, @up_port = upstream.split(':')
      @server = TCPServer.new(host == '0.0.0.0' ? '127.0.0.1' : host, port.to_i)
      @thread = Thread.new { accept_loop }
    end

    def toxic(type, attrs = {})
      Collection.new([Toxic.new(self, type, attrs)])
    end

    def toxics
      @lock.synchronize { @toxics.dup }
    end

    def add(toxic)
      @lock.synchronize { @toxics << toxic }
      cut_all if toxic.type == :limit_data
    end

    def remove(toxic)
      @lock.synchronize { @toxics.delete(toxic) }
    end

    def down?
      @lock.synchronize { @toxics.any? { |t| t.type == :limit_data } }
    end

    def latency
      @lock.synchronize { @toxics.select { |t| t.type == :latency }.sum { |t| t.attrs[:latency].to_i } } / 1000.0
    end

    def destroy
      @server.close rescue nil
      @thread.kill
      cut_all
      Toxiproxy.forget(@name)
    end
    alias delete destroy

    private

    def cut_all
      conns = @lock.synchronize { c = @conns.dup; @conns.clear; c }
      conns.each { |s| s.close rescue nil }
    end

    def accept_loop
      loop do
        client = @server.accept
        if down?
          client.close
          next
        end
        begin
          upstream = TCPSocket.new(@up_host, @up_port.to_i)
        rescue StandardError
          client.close
          next
        end
        @lock.synchronize { @conns << client << upstream }
        Thread.new { pipe(client, upstream, false) }
        Thread.new { pipe(upstream, client, true) }
      end
    rescue IOError, Errno::EBADF
      nil
    end

    def pipe(from, to, downstream)
      loop do
        data = from.readpartial(65_536)
        break if down?
        delay = downstream ? latency : 0
        sleep delay if delay > 0
        to.write(data)
      end
    rescue StandardError
      nil
    ensure
      from.close rescue nil
      to.close rescue nil
    end
  end

  def self.populate(list)
    list.each do |p|
      name = p[:name]
      @proxies[name]&.destroy
      @proxies[name] = Proxy.new(name, p[:listen], p[:upstream])
    end
  end

  # A proxy already destroyed (PgInstance's finalizers run after populate replaced theirs) destroys nothing.
  Gone = Object.new
  def Gone.destroy; end

  def self.[](name)
    @proxies.fetch(name, Gone)
  end

  def self.forget(name)
    @proxies.delete(name)
  end
end
